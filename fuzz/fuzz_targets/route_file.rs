//! Any bytes as a route file: parse, validate, build the table and run its
//! `tests:`. It must answer with a table or an error, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::reload::reloader::build;
use switchyard::routes::config::Source;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Source::new(text.to_owned());
    if let Ok(table) = build(&source, 1) {
        // Every route of a built table has a canonical prefix.
        for route in table.routes() {
            assert!(route.spec.prefix.starts_with('/'));
        }
    }
});
