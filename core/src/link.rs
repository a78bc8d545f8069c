//! The canonical `Link` header: `Link: <BASE/path>; rel="canonical"`.

use crate::percent::{encode, is_unreserved};

/// The header value pointing at `image_path` (decoded, normalized) under `base_url`.
/// Every byte that could end the URI reference or the header (`>`, `"`, space, CR, LF,
/// non-ASCII) is percent-encoded.
pub fn canonical(base_url: &str, image_path: &str) -> String {
    let path = encode(image_path, |b| {
        is_unreserved(b)
            || matches!(
                b,
                b'/' | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            )
    });
    format!(
        "<{}/{}>; rel=\"canonical\"",
        base_url.trim_end_matches('/'),
        path
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagekit_documented_example() {
        assert_eq!(
            canonical("https://www.example.com", "rest-of-the-path.jpg"),
            "<https://www.example.com/rest-of-the-path.jpg>; rel=\"canonical\""
        );
    }

    #[test]
    fn cannot_break_out_of_the_uri_reference() {
        let v = canonical(
            "https://cdn.example.com/",
            "a b/>\"x\r\nSet-Cookie: y/ü.jpg",
        );
        assert_eq!(
            v,
            "<https://cdn.example.com/a%20b/%3E%22x%0D%0ASet-Cookie:%20y/%C3%BC.jpg>; rel=\"canonical\""
        );
    }
}
