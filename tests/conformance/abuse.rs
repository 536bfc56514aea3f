//! Abuse against the real binary.
