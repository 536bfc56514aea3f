//! The spans of one sampled request (SPEC 9): the server span, open from
//! the request's arrival to the end of its response body, and a client
//! span per upstream try, from the try's start to its response head (or
//! its failure). Each is recorded as a few plain fields while it runs and
//! becomes OpenTelemetry's `SpanData`, attributes and all, only when it
//! ends, straight into the export queue.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Version};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags};
use opentelemetry::{Key, KeyValue, Value};
use opentelemetry_sdk::trace::{IdGenerator as _, SpanData, SpanEvents, SpanLinks};

use crate::trace::Tracer;

/// The W3C Trace Context header a try's upstream gets (SPEC 9).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A sampled request's server span. Boxed: the request's future and its
/// response body carry it by pointer.
#[derive(Debug)]
pub struct ServerSpan(Box<ServerState>);

#[derive(Debug)]
struct ServerState {
    tracer: Arc<Tracer>,
    context: SpanContext,
    /// The caller's span, from its `traceparent`; invalid for a new trace.
    parent: SpanId,
    start: SystemTime,
    scheme: &'static str,
    client: IpAddr,
}

/// How a request ended, as its server span records it: what the access
/// line knows by then.
#[derive(Debug)]
pub struct ServerEnd<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    /// The host the client addressed, port dropped.
    pub host: Option<&'a str>,
    /// The route's name and prefix, when one matched.
    pub route: Option<(&'a str, &'a str)>,
    pub config_version: u64,
    pub status: u16,
    pub version: Version,
}

/// A span's ids as lowercase hex, for the access line.
#[derive(Debug, Clone, Copy)]
pub struct SpanIds {
    trace_id: [u8; 32],
    span_id: [u8; 16],
}

impl SpanIds {
    fn of(context: &SpanContext) -> SpanIds {
        let mut ids = SpanIds {
            trace_id: [0; 32],
            span_id: [0; 16],
        };
        hex(&context.trace_id().to_bytes(), &mut ids.trace_id);
        hex(&context.span_id().to_bytes(), &mut ids.span_id);
        ids
    }

    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).unwrap_or("-")
    }

    pub fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span_id).unwrap_or("-")
    }
}

/// `bytes` as lowercase hex into `out`, twice as long.
fn hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// `00-TRACE-SPAN-FLAGS`, the `traceparent` naming `context`.
pub(crate) fn traceparent(context: &SpanContext) -> HeaderValue {
    let mut value = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex(&context.trace_id().to_bytes(), &mut value[3..35]);
    hex(&context.span_id().to_bytes(), &mut value[36..52]);
    let flags = context.trace_flags() & TraceFlags::SAMPLED;
    hex(&[flags.to_u8()], &mut value[53..55]);
    // Hex digits and dashes only: always a valid header value.
    HeaderValue::from_bytes(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl ServerSpan {
    pub(crate) fn new(
        tracer: Arc<Tracer>,
        context: SpanContext,
        parent: SpanId,
        scheme: &'static str,
        client: IpAddr,
    ) -> ServerSpan {
        ServerSpan(Box::new(ServerState {
            tracer,
            context,
            parent,
            start: SystemTime::now(),
            scheme,
            client,
        }))
    }

    /// Starts the client span of one upstream try and names it in the
    /// try's `traceparent`; `tracestate` is left as the client sent it.
    pub fn start_try(
        &self,
        headers: &mut HeaderMap,
        method: &Method,
        server_address: &str,
        server_port: Option<u16>,
    ) -> TrySpan {
        let server = &self.0;
        let context = SpanContext::new(
            server.context.trace_id(),
            server.tracer.ids.new_span_id(),
            server.context.trace_flags(),
            false,
            server.context.trace_state().clone(),
        );
        headers.insert(TRACEPARENT, traceparent(&context));
        TrySpan {
            tracer: Arc::clone(&server.tracer),
            context,
            parent: server.context.span_id(),
            start: SystemTime::now(),
            method: method_value(method),
            server_address: server_address.to_owned(),
            server_port,
        }
    }

    /// The server span's ids, for the access line.
    pub fn ids(&self) -> SpanIds {
        SpanIds::of(&self.0.context)
    }

    /// Ends the span with what the request came to and queues it for export.
    pub fn end(self, end: ServerEnd<'_>) {
        let ServerState {
            tracer,
            context,
            parent,
            start,
            scheme,
            client,
        } = *self.0;
        let method = method_value(end.method);
        let name = match end.route {
            Some((route, _)) => Cow::Owned(format!("{} {route}", end.method)),
            None => Cow::Owned(end.method.as_str().to_owned()),
        };
        let mut attributes = Vec::with_capacity(11);
        attributes.extend([
            attribute("http.request.method", method),
            attribute("url.path", Value::from(end.path.to_owned())),
            attribute("url.scheme", Value::from(scheme)),
        ]);
        if let Some((_, prefix)) = end.route {
            attributes.push(attribute("http.route", Value::from(prefix.to_owned())));
        }
        if let Some(host) = end.host {
            attributes.push(attribute("server.address", Value::from(host.to_owned())));
        }
        attributes.extend([
            attribute("client.address", Value::from(client.to_string())),
            attribute(
                "http.response.status_code",
                Value::I64(i64::from(end.status)),
            ),
            attribute(
                "network.protocol.version",
                Value::from(protocol_version(end.version)),
            ),
            attribute(
                "switchyard.route",
                Value::from(end.route.map_or("_none", |(name, _)| name).to_owned()),
            ),
            attribute(
                "switchyard.config.version",
                Value::I64(i64::try_from(end.config_version).unwrap_or(i64::MAX)),
            ),
        ]);
        // Server spans are errors on 5xx only: a 4xx is the client's doing.
        let status = if end.status >= 500 {
            attributes.push(attribute("error.type", Value::from(end.status.to_string())));
            Status::error("")
        } else {
            Status::Unset
        };
        let span = SpanData {
            parent_span_is_remote: parent != SpanId::INVALID,
            span_context: context,
            parent_span_id: parent,
            span_kind: SpanKind::Server,
            name,
            start_time: start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: tracer.scope.clone(),
        };
        tracer.queue.push(span);
    }
}

/// How an upstream try ended.
#[derive(Debug, Clone, Copy)]
pub enum TryEnd {
    /// A response head with this status.
    Answered(u16),
    /// No response: `error.type` says why (`connect`, `reset`, `timeout`,
    /// `invalid_response`).
    Failed(&'static str),
}

/// The client span of one upstream try.
#[derive(Debug)]
pub struct TrySpan {
    tracer: Arc<Tracer>,
    context: SpanContext,
    parent: SpanId,
    start: SystemTime,
    method: Value,
    server_address: String,
    server_port: Option<u16>,
}

impl TrySpan {
    /// Ends the span with how the try went and queues it for export.
    pub fn end(self, end: TryEnd) {
        let name = Cow::Owned(self.method.as_str().into_owned());
        let mut attributes = Vec::with_capacity(5);
        attributes.push(attribute("http.request.method", self.method));
        attributes.push(attribute(
            "server.address",
            Value::from(self.server_address),
        ));
        if let Some(port) = self.server_port {
            attributes.push(attribute("server.port", Value::I64(i64::from(port))));
        }
        // Client spans are errors on 4xx too, as OpenTelemetry's HTTP
        // conventions say: the request this side made was refused.
        let status = match end {
            TryEnd::Answered(code) => {
                attributes.push(attribute(
                    "http.response.status_code",
                    Value::I64(i64::from(code)),
                ));
                if code >= 400 {
                    attributes.push(attribute("error.type", Value::from(code.to_string())));
                    Status::error("")
                } else {
                    Status::Unset
                }
            }
            TryEnd::Failed(kind) => {
                attributes.push(attribute("error.type", Value::from(kind)));
                Status::error(kind)
            }
        };
        let span = SpanData {
            span_context: self.context,
            parent_span_id: self.parent,
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name,
            start_time: self.start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.tracer.scope.clone(),
        };
        self.tracer.queue.push(span);
    }
}

fn attribute(key: &'static str, value: Value) -> KeyValue {
    KeyValue::new(Key::from_static_str(key), value)
}

/// `http.request.method`: the standard methods by name, any other as
/// `_OTHER`, as OpenTelemetry's HTTP conventions say (a client could
/// otherwise make every request a new value).
fn method_value(method: &Method) -> Value {
    let name = match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => "_OTHER",
    };
    Value::from(name)
}

/// `network.protocol.version`: `1.1`, `2`, as OpenTelemetry writes them.
fn protocol_version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceId, TraceState};

    use super::*;

    #[test]
    fn traceparent_is_the_w3c_form() {
        let context = SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
            SpanId::from(0x00f0_67aa_0ba9_02b7),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        assert_eq!(
            traceparent(&context),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let ids = SpanIds::of(&context);
        assert_eq!(ids.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ids.span_id(), "00f067aa0ba902b7");
    }
}
