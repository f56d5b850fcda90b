//! gRPC: recognising a gRPC request, and shaping meshguard's own replies to one
//! as a gRPC client expects them (HTTP 200, trailers-only, `grpc-status`,
//! `grpc-message`, and `grpc-retry-pushback-ms` where a wait is known).

use std::borrow::Cow;

use crate::decision::{GrpcReply, LocalReply};
use crate::view::RequestView;

/// Whether the request is gRPC: its `content-type` is `application/grpc` or one
/// of its `+proto`, `+json`, … forms (read only when a reply is being shaped).
pub fn is_grpc_request(req: &mut impl RequestView) -> bool {
    req.header("content-type").is_some_and(|v| {
        v.strip_prefix(b"application/grpc")
            .is_some_and(|rest| matches!(rest.first(), None | Some(b'+' | b';')))
    })
}

/// Turns `reply` into a gRPC reply when `grpc`: its gRPC status and the body as
/// the message; no `content-type` of its own (Envoy sets `application/grpc`); the
/// `retry-after` wait also as `grpc-retry-pushback-ms`, which gRPC's retry policy
/// reads.
pub fn shape(reply: &mut LocalReply<'_>, grpc: bool) {
    if !grpc {
        return;
    }
    reply.headers.retain(|(k, _)| k != "content-type");
    let wait = reply
        .headers
        .iter()
        .find(|(k, _)| k == "retry-after")
        .and_then(|(_, v)| v.parse::<u64>().ok());
    if let Some(s) = wait {
        reply.headers.push((
            Cow::Borrowed("grpc-retry-pushback-ms"),
            s.saturating_mul(1000).to_string(),
        ));
    }
    reply.grpc = Some(GrpcReply {
        status: reply.grpc_status,
        message: match &reply.body {
            Cow::Borrowed(b) => Cow::Borrowed(b.trim_end_matches('\n')),
            Cow::Owned(b) => Cow::Owned(b.trim_end_matches('\n').to_owned()),
        },
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::ReplyReason;
    use wasm_bindgen_test::wasm_bindgen_test;

    struct Ct(Option<&'static [u8]>);
    impl RequestView for Ct {
        fn header(&mut self, name: &str) -> Option<&[u8]> {
            (name == "content-type").then_some(self.0).flatten()
        }
        fn source_address(&mut self) -> Option<&[u8]> {
            None
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn grpc_requests_by_content_type() {
        for (ct, want) in [
            (Some(&b"application/grpc"[..]), true),
            (Some(b"application/grpc+proto"), true),
            (Some(b"application/grpc+json"), true),
            (Some(b"application/grpc; charset=utf-8"), true),
            (Some(b"application/grpcx"), false),
            (Some(b"application/json"), false),
            (Some(b"application/grpc-web"), false),
            (None, false),
        ] {
            assert_eq!(is_grpc_request(&mut Ct(ct)), want, "{ct:?}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn a_grpc_reply_carries_status_message_and_pushback() {
        let mut r = LocalReply {
            status: 429,
            headers: vec![
                ("retry-after".into(), "3".into()),
                ("content-type".into(), "text/plain; charset=utf-8".into()),
                ("ratelimit".into(), "\"api\";r=0;t=3".into()),
            ],
            body: "rate limited\n".into(),
            reason: ReplyReason::RateLimited { policy: 0 },
            grpc_status: 8,
            grpc: None,
        };
        let plain = r.clone();
        shape(&mut r, false);
        assert_eq!(r, plain);
        shape(&mut r, true);
        assert_eq!(
            r.grpc,
            Some(GrpcReply {
                status: 8,
                message: "rate limited".into()
            })
        );
        let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(
            names,
            ["retry-after", "ratelimit", "grpc-retry-pushback-ms"]
        );
        assert_eq!(r.headers[2].1, "3000");
    }
}
