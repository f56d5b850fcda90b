//! Reading cookies and query parameters out of raw header bytes.

use std::borrow::Cow;

/// The value of cookie `name` in a `Cookie` header (`a=1; b="2"`), quotes removed.
pub fn cookie<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (k, v) = pair.split_at(eq);
        let v = v.get(1..)?;
        (k.trim_ascii() == name.as_bytes()).then(|| {
            let v = v.trim_ascii();
            v.strip_prefix(b"\"")
                .and_then(|x| x.strip_suffix(b"\""))
                .unwrap_or(v)
        })
    })
}

/// The first value of query parameter `name` in a `:path`, percent-decoded
/// (`+` is kept as is). A parameter without `=` has the empty value.
pub fn query<'a>(path: &'a [u8], name: &str) -> Option<Cow<'a, [u8]>> {
    let start = path.iter().position(|&b| b == b'?')? + 1;
    let q = path.get(start..)?;
    let q = q.split(|&b| b == b'#').next().unwrap_or(q);
    q.split(|&b| b == b'&').find_map(|pair| {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (pair.get(..eq)?, pair.get(eq + 1..)?),
            None => (pair, &b""[..]),
        };
        (percent_decode(k).as_ref() == name.as_bytes()).then(|| percent_decode(v))
    })
}

/// Decodes `%XX` escapes; malformed escapes are kept literally.
pub fn percent_decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        let hex = |j: usize| s.get(j).and_then(|c| (*c as char).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn cookies_are_found_by_exact_name() {
        let h = b"session=abc; beta=1;theme=\"dark\" ; betax=2";
        assert_eq!(cookie(h, "beta"), Some(&b"1"[..]));
        assert_eq!(cookie(h, "theme"), Some(&b"dark"[..]));
        assert_eq!(cookie(h, "betax"), Some(&b"2"[..]));
        assert_eq!(cookie(h, "bet"), None);
        assert_eq!(cookie(b"", "a"), None);
        assert_eq!(cookie(b"novalue; a=", "a"), Some(&b""[..]));
        assert_eq!(cookie(b"\xff=\xfe", "a"), None);
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn query_parameters_are_found_and_decoded() {
        let p = b"/x?a=1&canary=yes%21&flag&b=%ZZ#frag";
        assert_eq!(query(p, "canary").as_deref(), Some(&b"yes!"[..]));
        assert_eq!(query(p, "flag").as_deref(), Some(&b""[..]));
        assert_eq!(query(p, "b").as_deref(), Some(&b"%ZZ"[..]));
        assert_eq!(query(p, "frag"), None);
        assert_eq!(query(b"/x", "a"), None);
        assert_eq!(query(b"/x?a%3D=1", "a="), Some(Cow::Borrowed(&b"1"[..])));
        assert_eq!(query(b"/x?a=1&a=2", "a").as_deref(), Some(&b"1"[..]));
        assert_eq!(query(b"/x?a=%f", "a").as_deref(), Some(&b"%f"[..]));
    }
}
