//! How pretty log lines look. Every event uses tracing-subscriber's default
//! format, except access-log events: there is one per request, so they get
//! a small formatter of their own that writes `name=value` pairs straight
//! into the line, quoting a value only when it needs it. The default format
//! quotes and escapes every string character by character and runs each
//! part through its colour machinery, which was most of what the access log
//! cost a request. JSON output keeps tracing-subscriber's JSON format.

use std::cell::Cell;
use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, Format, FormatEvent, FormatFields, Full, Writer};
use tracing_subscriber::fmt::time::SystemTime;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

use crate::observe::access;

/// The default format for everything but access events.
pub struct PrettyLines {
    default: Format<Full, SystemTime>,
}

impl PrettyLines {
    pub fn new(ansi: bool) -> Self {
        PrettyLines {
            default: format::format().with_ansi(ansi),
        }
    }
}

impl<S, N> FormatEvent<S, N> for PrettyLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        if metadata.target() != access::TARGET {
            return self.default.format_event(ctx, writer, event);
        }
        write_timestamp(&mut writer, std::time::SystemTime::now())?;
        // The level right-aligned in five columns, as the default format.
        let level = match *metadata.level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => " WARN",
            tracing::Level::INFO => " INFO",
            tracing::Level::DEBUG => "DEBUG",
            tracing::Level::TRACE => "TRACE",
        };
        writer.write_char(' ')?;
        writer.write_str(level)?;
        writer.write_char(' ')?;
        writer.write_str(metadata.target())?;
        writer.write_char(':')?;
        let mut fields = Pairs {
            writer: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// Writes `at` as RFC 3339 UTC with microseconds, as the default format
/// does. The date and time to the second are formatted once per second and
/// thread; a line only adds its microseconds.
fn write_timestamp(writer: &mut Writer<'_>, at: std::time::SystemTime) -> fmt::Result {
    thread_local! {
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let Ok(since_epoch) = at.duration_since(std::time::UNIX_EPOCH) else {
        return write!(writer, "{}", humantime::format_rfc3339_micros(at));
    };
    let seconds = since_epoch.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != seconds {
        let whole = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
        let text = humantime::format_rfc3339_seconds(whole).to_string();
        match text.as_bytes().get(..19) {
            Some(date_and_time) => prefix.copy_from_slice(date_and_time),
            None => return write!(writer, "{}", humantime::format_rfc3339_micros(at)),
        }
        SECOND.set((seconds, prefix));
    }
    let mut micros = [b'Z'; 8];
    write_fraction(&mut micros[..7], u64::from(since_epoch.subsec_micros()), 6);
    match (std::str::from_utf8(&prefix), std::str::from_utf8(&micros)) {
        (Ok(prefix), Ok(micros)) => {
            writer.write_str(prefix)?;
            writer.write_str(micros)
        }
        _ => write!(writer, "{}", humantime::format_rfc3339_micros(at)),
    }
}

/// Writes `.` and `fraction` in `places` digits, zeros kept, at the end of
/// `digits`; returns where the point is and where the digits end.
fn write_fraction(digits: &mut [u8], fraction: u64, places: u32) -> (usize, usize) {
    // A leading 1 keeps the zeros the fraction starts with; it becomes the point.
    let at = write_digits(digits, 10u64.pow(places) + fraction);
    digits[at] = b'.';
    (at, digits.len())
}

/// Writes `value` in decimal at the end of `digits`; returns where it starts.
fn write_digits(digits: &mut [u8], value: u64) -> usize {
    let mut at = digits.len();
    let mut rest = value;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            return at;
        }
    }
}

/// Writes each field as ` name=value`; the message as ` value`.
struct Pairs<'a, 'w> {
    writer: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Pairs<'_, '_> {
    fn pair(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| self.writer.write_fmt(value));
        }
    }

    /// Writes ` name=`, or ` ` for the message; plain `write_str` calls, since
    /// `write!` runs the whole formatting machinery for every piece.
    fn name(&mut self, field: &Field) -> fmt::Result {
        self.writer.write_char(' ')?;
        if field.name() != "message" {
            self.writer.write_str(field.name())?;
            self.writer.write_char('=')?;
        }
        Ok(())
    }

    fn plain(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.name(field).and_then(|()| self.writer.write_str(value));
        }
    }
}

impl Visit for Pairs<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // Quote only what a reader could misparse: empty values and values
        // with spaces, quotes, `=` or control characters.
        let plain = !value.is_empty()
            && !value
                .bytes()
                .any(|b| b <= b' ' || b == b'"' || b == b'=' || b == 0x7f);
        if plain || field.name() == "message" {
            self.plain(field, value);
        } else {
            self.pair(field, format_args!("{value:?}"));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let mut digits = [0u8; 20];
        let at = write_digits(&mut digits, value);
        // ASCII digits, so always valid UTF-8.
        match std::str::from_utf8(&digits[at..]) {
            Ok(text) => self.plain(field, text),
            Err(_) => self.pair(field, format_args!("{value}")),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.pair(field, format_args!("{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // `duration_ms` is whole microseconds over 1,000: written digit by
        // digit it reads as Display would print it, without the shortest
        // round-trip search that Display runs for every float.
        let thousandths = (value * 1000.0).round();
        if value >= 0.0 && thousandths < 1e15 && thousandths / 1000.0 == value {
            let thousandths = thousandths as u64;
            let mut digits = [0u8; 24];
            let (point, mut end) = write_fraction(&mut digits, thousandths % 1000, 3);
            // Display drops trailing zeros, and the point with the last.
            while digits[end - 1] == b'0' {
                end -= 1;
            }
            if end == point + 1 {
                end = point;
            }
            let at = write_digits(&mut digits[..point], thousandths / 1000);
            if let Ok(text) = std::str::from_utf8(&digits[at..end]) {
                self.plain(field, text);
                return;
            }
        }
        self.pair(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.pair(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.pair(field, format_args!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `record_f64` writes for a field named `duration_ms`.
    fn written(value: f64) -> String {
        struct Capture(String);
        impl Visit for Capture {
            fn record_debug(&mut self, _: &Field, _: &dyn fmt::Debug) {}
            fn record_f64(&mut self, field: &Field, value: f64) {
                let mut line = String::new();
                let mut writer = Writer::new(&mut line);
                let mut pairs = Pairs {
                    writer: &mut writer,
                    result: Ok(()),
                };
                pairs.record_f64(field, value);
                self.0 = line;
            }
        }
        let mut capture = Capture(String::new());
        static META: tracing::Metadata<'static> = tracing::metadata! {
            name: "test",
            target: "test",
            level: tracing::Level::INFO,
            fields: &["duration_ms"],
            callsite: &CALLSITE,
            kind: tracing::metadata::Kind::EVENT,
        };
        static CALLSITE: tracing::callsite::DefaultCallsite =
            tracing::callsite::DefaultCallsite::new(&META);
        let field = META.fields().field("duration_ms").expect("the field");
        capture.record_f64(&field, value);
        capture.0
    }

    #[test]
    fn timestamps_print_as_humantime_would() {
        let base = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_796_000_000);
        for micros in [0u64, 1, 999_999, 1_000_000, 1_500_042, 86_400_000_007] {
            let at = base + std::time::Duration::from_micros(micros);
            let mut line = String::new();
            write_timestamp(&mut Writer::new(&mut line), at).expect("written");
            assert_eq!(line, humantime::format_rfc3339_micros(at).to_string());
        }
    }

    #[test]
    fn durations_print_as_display_would() {
        for micros in [0u64, 1, 9, 10, 100, 255, 1000, 1500, 1_234_567, 99_999_999] {
            let value = micros as f64 / 1000.0;
            assert_eq!(
                written(value),
                format!(" duration_ms={value}"),
                "{micros} µs"
            );
        }
        for value in [0.0001, 1.0 / 3.0, -2.5, 1e300] {
            assert_eq!(written(value), format!(" duration_ms={value}"));
        }
    }
}
