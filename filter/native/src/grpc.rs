//! Unary gRPC over the ABI's HTTP callout: the 1.40 dynamic-module ABI has no
//! gRPC client, so a call to the rate limit service is an HTTP/2 POST with a
//! length-prefixed message (the gRPC wire format), and its answer is read back
//! from the callout's response.
//!
//! The callout hands over the response's headers and body but not its
//! trailers, where a normal gRPC answer carries `grpc-status`. So an answer is
//! judged from what is there: HTTP `:status` 200, no `grpc-status` other than
//! 0 in the headers (a trailers-only error reply puts it there), and one whole
//! uncompressed message in the body. A server that sends a message and then a
//! non-zero status in trailers is not distinguished from success; gRPC servers
//! send no message with an error status.

/// gRPC status UNKNOWN: the answer could not be read as a gRPC reply.
pub const UNKNOWN: u32 = 2;
/// gRPC status UNAVAILABLE: no answer (the callout failed or was reset).
pub const UNAVAILABLE: u32 = 14;

/// The request headers of a unary call to `path` (`/{service}/{method}`) on
/// `authority`: borrowed, so a call allocates only its path.
pub fn request_headers<'a>(authority: &'a str, path: &'a str) -> [(&'a str, &'a str); 6] {
    [
        (":method", "POST"),
        (":path", path),
        (":authority", authority),
        (":scheme", "http"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
}

/// `message` as one gRPC frame: an uncompressed flag, a 4-byte big-endian length,
/// the bytes. `None` when the message does not fit a frame (over 4 GiB).
pub fn frame(message: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(message.len()).ok()?;
    let mut out = Vec::with_capacity(message.len().saturating_add(5));
    out.push(0);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Some(out)
}

/// The gRPC status and message of a callout's answer: `(0, message)` for a
/// readable reply, `(status, None)` otherwise. `succeeded` is the callout's
/// own result (false: reset, or the answer was too large).
pub fn answer<'a>(
    succeeded: bool,
    headers: &[(&[u8], &[u8])],
    body: &'a [u8],
) -> (u32, Option<&'a [u8]>) {
    if !succeeded {
        return (UNAVAILABLE, None);
    }
    let header = |name: &[u8]| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    if header(b":status") != Some(b"200".as_slice()) {
        return (UNAVAILABLE, None);
    }
    if let Some(v) = header(b"grpc-status") {
        match std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            Some(0) => {}
            Some(code) => return (code, None),
            None => return (UNKNOWN, None),
        }
    }
    match unframe(body) {
        Some(message) => (0, Some(message)),
        None => (UNKNOWN, None),
    }
}

/// The message of a body holding exactly one uncompressed frame.
fn unframe(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let (len, message) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    (flag == 0 && message.len() == len).then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &[(&[u8], &[u8])] = &[(b":status", b"200"), (b"content-type", b"application/grpc")];

    #[test]
    fn a_framed_message_reads_back() {
        let body = frame(b"\x08\x01").unwrap();
        assert_eq!(body, b"\x00\x00\x00\x00\x02\x08\x01");
        assert_eq!(answer(true, OK, &body), (0, Some(&b"\x08\x01"[..])));
        // An empty message is still one frame.
        let empty = frame(b"").unwrap();
        assert_eq!(answer(true, OK, &empty), (0, Some(&b""[..])));
    }

    #[test]
    fn a_failed_or_non_200_callout_is_unavailable() {
        let body = frame(b"x").unwrap();
        assert_eq!(answer(false, OK, &body), (UNAVAILABLE, None));
        let h503: &[(&[u8], &[u8])] = &[(b":status", b"503")];
        assert_eq!(answer(true, h503, &body), (UNAVAILABLE, None));
        assert_eq!(answer(true, &[], &body), (UNAVAILABLE, None));
    }

    #[test]
    fn a_trailers_only_error_keeps_its_status() {
        let h: &[(&[u8], &[u8])] = &[(b":status", b"200"), (b"grpc-status", b"12")];
        assert_eq!(answer(true, h, &[]), (12, None));
        let bad: &[(&[u8], &[u8])] = &[(b":status", b"200"), (b"grpc-status", b"x")];
        assert_eq!(answer(true, bad, &[]), (UNKNOWN, None));
        let zero: &[(&[u8], &[u8])] = &[(b":status", b"200"), (b"grpc-status", b"0")];
        let body = frame(b"m").unwrap();
        assert_eq!(answer(true, zero, &body), (0, Some(&b"m"[..])));
    }

    #[test]
    fn a_body_that_is_not_one_whole_frame_is_unknown() {
        let mut body = frame(b"abc").unwrap();
        for cut in 0..body.len() {
            assert_eq!(answer(true, OK, &body[..cut]), (UNKNOWN, None), "cut {cut}");
        }
        body.push(0); // trailing byte
        assert_eq!(answer(true, OK, &body), (UNKNOWN, None));
        let mut compressed = frame(b"abc").unwrap();
        compressed[0] = 1;
        assert_eq!(answer(true, OK, &compressed), (UNKNOWN, None));
    }

    #[test]
    fn the_request_names_the_method_and_speaks_grpc() {
        let h = request_headers("rls", "/pkg.Svc/Call");
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        assert_eq!(get(":method"), Some("POST"));
        assert_eq!(get(":path"), Some("/pkg.Svc/Call"));
        assert_eq!(get(":authority"), Some("rls"));
        assert_eq!(get("content-type"), Some("application/grpc"));
        assert_eq!(get("te"), Some("trailers"));
    }
}
