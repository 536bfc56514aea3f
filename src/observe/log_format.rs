//! How an access line looks, pretty or JSON. There is one line per request,
//! so it is written byte by byte into the log buffer, not through tracing's
//! formatter: an event there records every field through a visitor and
//! every piece through `fmt::Write`, which was most of what the access log
//! cost a request. The lines read as tracing-subscriber's own formats do
//! (its default format and its flattened JSON), so one log stream has one
//! shape whichever path wrote a line.

use std::cell::Cell;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The fields of one access line; see [`crate::observe::access`].
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    pub method: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a str,
    /// The query string as sent, without its `?`; absent when there is none.
    pub query: Option<&'a str>,
    pub route: &'a str,
    pub upstream: &'a str,
    pub status: u16,
    /// Printed as `duration_ms`, in whole microseconds over 1,000.
    pub duration: Duration,
    pub bytes: u64,
    pub request_id: &'a str,
    pub outcome: &'static str,
    pub listener: &'static str,
    /// The client's HTTP version, as `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// The answering upstream's HTTP version, when one answered.
    pub upstream_protocol: Option<&'static str>,
    /// Why each retry was made, `,`-separated; `None` without retries.
    pub retries: Option<&'a str>,
    pub mirrored: bool,
    pub error: Option<&'static str>,
    /// The server span's ids, when the request was traced (SPEC 9).
    pub trace_id: Option<&'a str>,
    pub span_id: Option<&'a str>,
}

/// How log lines are written: `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFormat {
    Pretty,
    Json,
}

impl AccessLine<'_> {
    /// Appends the line, newline included.
    pub fn write(&self, format: LineFormat, target: &str, at: SystemTime, out: &mut Vec<u8>) {
        match format {
            LineFormat::Pretty => self.write_pretty(target, at, out),
            LineFormat::Json => self.write_json(target, at, out),
        }
    }

    /// `<timestamp>  INFO <target>: request name=value ...`, a value quoted
    /// (as `{:?}` prints it) only when a reader could misparse it.
    fn write_pretty(&self, target: &str, at: SystemTime, out: &mut Vec<u8>) {
        write_timestamp(out, at);
        // The level right-aligned in five columns, as the default format.
        out.extend_from_slice(b"  INFO ");
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b": request");
        let mut pair = |name: &str, value: &[u8]| {
            out.push(b' ');
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value);
        };
        let mut digits = [0u8; 24];
        pair("method", &pretty(self.method));
        if let Some(host) = self.host {
            pair("host", &pretty(host));
        }
        pair("path", &pretty(self.path));
        if let Some(query) = self.query {
            pair("query", &pretty(query));
        }
        pair("route", &pretty(self.route));
        pair("upstream", &pretty(self.upstream));
        pair("status", decimal(&mut digits, u64::from(self.status)));
        pair(
            "duration_ms",
            milliseconds(&mut digits, self.duration, false),
        );
        pair("bytes", decimal(&mut digits, self.bytes));
        pair("request_id", &pretty(self.request_id));
        pair("outcome", self.outcome.as_bytes());
        pair("listener", self.listener.as_bytes());
        pair("protocol", self.protocol.as_bytes());
        if let Some(upstream) = self.upstream_protocol {
            pair("upstream_protocol", upstream.as_bytes());
        }
        if let Some(retries) = self.retries {
            pair("retries", retries.as_bytes());
        }
        if self.mirrored {
            pair("mirrored", b"true");
        }
        if let Some(error) = self.error {
            pair("error", &pretty(error));
        }
        if let (Some(trace_id), Some(span_id)) = (self.trace_id, self.span_id) {
            pair("trace_id", &pretty(trace_id));
            pair("span_id", &pretty(span_id));
        }
        out.push(b'\n');
    }

    /// One JSON object, keys in the order tracing-subscriber's flattened
    /// JSON puts them; an absent `host` or `error` has no key.
    fn write_json(&self, target: &str, at: SystemTime, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(out, at);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\"");
        let mut digits = [0u8; 24];
        let key = |name: &str, out: &mut Vec<u8>| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
        };
        key("method", out);
        json_string(out, self.method);
        if let Some(host) = self.host {
            key("host", out);
            json_string(out, host);
        }
        key("path", out);
        json_string(out, self.path);
        if let Some(query) = self.query {
            key("query", out);
            json_string(out, query);
        }
        key("route", out);
        json_string(out, self.route);
        key("upstream", out);
        json_string(out, self.upstream);
        key("status", out);
        out.extend_from_slice(decimal(&mut digits, u64::from(self.status)));
        key("duration_ms", out);
        out.extend_from_slice(milliseconds(&mut digits, self.duration, true));
        key("bytes", out);
        out.extend_from_slice(decimal(&mut digits, self.bytes));
        key("request_id", out);
        json_string(out, self.request_id);
        key("outcome", out);
        json_string(out, self.outcome);
        key("listener", out);
        json_string(out, self.listener);
        key("protocol", out);
        json_string(out, self.protocol);
        if let Some(upstream) = self.upstream_protocol {
            key("upstream_protocol", out);
            json_string(out, upstream);
        }
        if let Some(retries) = self.retries {
            key("retries", out);
            json_string(out, retries);
        }
        if self.mirrored {
            key("mirrored", out);
            out.extend_from_slice(b"true");
        }
        if let Some(error) = self.error {
            key("error", out);
            json_string(out, error);
        }
        if let (Some(trace_id), Some(span_id)) = (self.trace_id, self.span_id) {
            key("trace_id", out);
            json_string(out, trace_id);
            key("span_id", out);
            json_string(out, span_id);
        }
        key("target", out);
        json_string(out, target);
        out.extend_from_slice(b"}\n");
    }
}

/// `value` as the pretty format writes it: bare, or quoted and escaped when
/// it is empty or holds a space, a quote, `=` or a control character.
fn pretty(value: &str) -> std::borrow::Cow<'_, [u8]> {
    let plain = !value.is_empty() && !value.bytes().any(|b| QUOTED_IN_PRETTY[usize::from(b)]);
    if plain {
        std::borrow::Cow::Borrowed(value.as_bytes())
    } else {
        std::borrow::Cow::Owned(format!("{value:?}").into_bytes())
    }
}

/// The bytes that make the pretty format quote a value: space and the
/// control characters, `"`, `=` and DEL. A table, since every value of
/// every access line is scanned: one load per byte instead of four
/// comparisons.
static QUOTED_IN_PRETTY: [bool; 256] = {
    let mut quoted = [false; 256];
    let mut b = 0;
    while b < 256 {
        quoted[b] = b <= b' ' as usize || b == b'"' as usize || b == b'=' as usize || b == 0x7f;
        b += 1;
    }
    quoted
};

/// `value` as a JSON string, escaped as serde_json escapes it.
fn json_string(out: &mut Vec<u8>, value: &str) {
    if value.bytes().any(|b| b < b' ' || b == b'"' || b == b'\\') {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(out, value);
    } else {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    }
}

/// `duration` in milliseconds with its microseconds as decimals, as
/// `Display` prints the float `micros / 1000.0` (trailing zeros dropped,
/// and the point with them), or as serde_json prints it (`1.0` for a
/// whole number) when `json`. Digit by digit, without the shortest
/// round-trip search that float formatting runs every time.
fn milliseconds(digits: &mut [u8; 24], duration: Duration, json: bool) -> &[u8] {
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    let (point, mut end) = write_fraction(&mut digits[..], micros % 1000, 3);
    while digits[end - 1] == b'0' {
        end -= 1;
    }
    if end == point + 1 {
        if json {
            end += 1;
        } else {
            end = point;
        }
    }
    let at = write_digits(&mut digits[..point], micros / 1000);
    &digits[at..end]
}

/// `value` in decimal, at the end of `digits`.
fn decimal(digits: &mut [u8; 24], value: u64) -> &[u8] {
    let at = write_digits(&mut digits[..], value);
    &digits[at..]
}

/// Writes `at` as RFC 3339 UTC with microseconds, as tracing-subscriber's
/// formats do. The date and time to the second are formatted once per
/// second and thread; a line only adds its microseconds.
fn write_timestamp(out: &mut Vec<u8>, at: SystemTime) {
    thread_local! {
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let Ok(since_epoch) = at.duration_since(UNIX_EPOCH) else {
        let _ = write!(out, "{}", humantime::format_rfc3339_micros(at));
        return;
    };
    let seconds = since_epoch.as_secs();
    let (cached, mut prefix) = SECOND.get();
    if cached != seconds {
        let whole = UNIX_EPOCH + Duration::from_secs(seconds);
        let text = humantime::format_rfc3339_seconds(whole).to_string();
        let Some(date_and_time) = text.as_bytes().get(..19) else {
            let _ = write!(out, "{}", humantime::format_rfc3339_micros(at));
            return;
        };
        prefix.copy_from_slice(date_and_time);
        SECOND.set((seconds, prefix));
    }
    let mut micros = [b'Z'; 8];
    write_fraction(&mut micros[..7], u64::from(since_epoch.subsec_micros()), 6);
    out.extend_from_slice(&prefix);
    out.extend_from_slice(&micros);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(micros: u64) -> AccessLine<'static> {
        AccessLine {
            method: "GET",
            host: Some("a.test:8080"),
            path: "/x=1",
            query: Some("a=1&b"),
            route: "api",
            upstream: "http://127.0.0.1:9/",
            status: 200,
            duration: Duration::from_micros(micros),
            bytes: 13,
            request_id: "r-1",
            outcome: "complete",
            listener: "proxy",
            protocol: "HTTP/1.1",
            upstream_protocol: Some("HTTP/1.1"),
            retries: None,
            mirrored: false,
            error: None,
            trace_id: None,
            span_id: None,
        }
    }

    fn written(line: &AccessLine<'_>, format: LineFormat, at: SystemTime) -> String {
        let mut out = Vec::new();
        line.write(format, "switchyard::access", at, &mut out);
        String::from_utf8(out).expect("a log line is UTF-8")
    }

    #[test]
    fn timestamps_print_as_humantime_would() {
        let base = UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        for micros in [0u64, 1, 999_999, 1_000_000, 1_500_042, 86_400_000_007] {
            let at = base + Duration::from_micros(micros);
            let mut out = Vec::new();
            write_timestamp(&mut out, at);
            let expected = humantime::format_rfc3339_micros(at).to_string();
            assert_eq!(out, expected.as_bytes());
        }
    }

    #[test]
    fn durations_print_as_display_and_serde_json_would() {
        for micros in [0u64, 1, 9, 10, 100, 255, 1000, 1500, 1_234_567, 99_999_999] {
            let value = micros as f64 / 1000.0;
            let mut digits = [0u8; 24];
            let pretty = milliseconds(&mut digits, Duration::from_micros(micros), false);
            assert_eq!(pretty, value.to_string().as_bytes(), "{micros} µs");
            let json = milliseconds(&mut digits, Duration::from_micros(micros), true);
            let expected = serde_json::to_string(&value).expect("a finite float");
            assert_eq!(json, expected.as_bytes(), "{micros} µs");
        }
    }

    #[test]
    fn pretty_lines_quote_only_what_could_be_misread() {
        let at = UNIX_EPOCH + Duration::from_micros(1_796_000_000_000_042);
        let mut quoted = line(1500);
        quoted.request_id = "a \"b\"";
        quoted.host = None;
        quoted.error = Some("no_route");
        quoted.upstream_protocol = None;
        assert_eq!(
            written(&quoted, LineFormat::Pretty, at),
            "2026-11-30T00:53:20.000042Z  INFO switchyard::access: request method=GET \
             path=\"/x=1\" query=\"a=1&b\" route=api upstream=http://127.0.0.1:9/ status=200 duration_ms=1.5 \
             bytes=13 request_id=\"a \\\"b\\\"\" outcome=complete listener=proxy protocol=HTTP/1.1 \
             error=no_route\n"
        );
    }

    #[test]
    fn json_lines_are_what_tracing_subscriber_would_write() {
        let at = UNIX_EPOCH + Duration::from_micros(1_796_000_000_000_042);
        let mut escaped = line(2000);
        escaped.path = "/\"\\\u{1}é";
        escaped.error = Some("no_route");
        let text = written(&escaped, LineFormat::Json, at);
        assert!(text.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(&text).expect("one JSON object");
        let expected = serde_json::json!({
            "timestamp": "2026-11-30T00:53:20.000042Z",
            "level": "INFO",
            "message": "request",
            "method": "GET",
            "host": "a.test:8080",
            "path": "/\"\\\u{1}é",
            "query": "a=1&b",
            "route": "api",
            "upstream": "http://127.0.0.1:9/",
            "status": 200,
            "duration_ms": 2.0,
            "bytes": 13,
            "request_id": "r-1",
            "outcome": "complete",
            "listener": "proxy",
            "protocol": "HTTP/1.1",
            "upstream_protocol": "HTTP/1.1",
            "error": "no_route",
            "target": "switchyard::access",
        });
        assert_eq!(value, expected);
        assert!(text.contains("\"duration_ms\":2.0,"));
        assert!(text.ends_with(",\"target\":\"switchyard::access\"}\n"));
    }
}
