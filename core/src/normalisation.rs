//! Signed URLs through a listener that normalises paths (Envoy's `normalize_path: true`, Istio's
//! default `BASE`): the filter sees the normalised path, not the one the client signed, and
//! Envoy keeps no copy of the original (`x-envoy-original-path` is only set by route rewrites).
//!
//! Envoy's normalisation (measured, Envoy 1.3x, Chromium's URL canonicaliser): it decodes
//! percent-escaped unreserved characters (`%7E` → `~`, `%41` → `A`, either case), escapes the
//! characters a path may not hold raw (`{` `}` `"` `<` `>` `|` `^` `` ` `` → `%7B` …), turns `\` into
//! `/`, and removes dot segments (`%2E` counts as a dot); `merge_slashes` merges `//`. The query
//! string is left alone.
//!
//! A signature verifies over the string the client signed; of the strings Envoy turns into the
//! same path, [`signed_forms`] gives the ones clients produce: the path as received; with `~`
//! written `%7E` (Java's `URLEncoder`, Python's `quote` before 3.7, PHP's `rawurlencode` before
//! 5.3 escape it); with Envoy's added escapes undone (clients that send `|` or `^` raw); and both.
//! Every form differs from the received path only in percent-escapes of characters that each
//! grammar percent-decodes before it reads them (image paths, plain sources, text values; none
//! is syntax in any grammar), so every form means the same request: a signature over any of
//! them authenticates what is served. Merged slashes come back in one place: an imgproxy plain
//! source `s3:/B/K` or `local:/K` can only have been `s3://B/K` or `local:///K`
//! ([`unmerged_source`]; the router reads and verifies that form). Elsewhere what normalisation
//! removes cannot come back: dot segments, slashes merged in keys and (with
//! `UNESCAPE_AND_FORWARD`) `%2F` change what the path says, and such URLs do not verify (README,
//! "Path normalisation").

/// An imgproxy path whose plain source lost a slash to `merge_slashes` (`…/plain/s3:/B/K`,
/// `…/plain/local:/K`), with the source as it was written (`s3://B/K`, `local:///K`); `None`
/// for any other path. Neither single-slash form is a source of its own, so the path can only
/// have meant this one; the router then reads and verifies this form.
pub fn unmerged_source(path: &str) -> Option<String> {
    const PLAIN: &str = "/plain/";
    let start = path.find(PLAIN)? + PLAIN.len();
    let source = &path[start..];
    let (merged, whole) = [("s3:/", "s3://"), ("local:/", "local:///")]
        .into_iter()
        .find(|(merged, _)| {
            source.starts_with(merged) && !source[merged.len()..].starts_with('/')
        })?;
    Some(format!(
        "{}{whole}{}",
        &path[..start],
        &source[merged.len()..]
    ))
}

/// The escapes Envoy's normalisation adds for characters a client may send raw.
const ADDED_ESCAPES: &[(&str, char)] = &[
    ("%7B", '{'),
    ("%7D", '}'),
    ("%22", '"'),
    ("%3C", '<'),
    ("%3E", '>'),
    ("%7C", '|'),
    ("%5E", '^'),
    ("%60", '`'),
];

/// The strings a client may have signed for `received` (the signed part of a URL, its query
/// string after a `?` left as it is): `received` first, then at most three more, each distinct.
pub fn signed_forms(received: &str) -> Vec<String> {
    let (path, query) = match received.find('?') {
        Some(i) => received.split_at(i),
        None => (received, ""),
    };
    let tilde = |p: &str| p.replace('~', "%7E");
    let unescaped = |p: &str| {
        ADDED_ESCAPES.iter().fold(p.to_owned(), |p, (escape, raw)| {
            p.replace(escape, raw.encode_utf8(&mut [0; 4]))
        })
    };
    let mut forms = vec![received.to_owned()];
    for candidate in [tilde(path), unescaped(path), tilde(&unescaped(path))] {
        let form = format!("{candidate}{query}");
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_received_form_comes_first_and_only_changed_forms_follow() {
        assert_eq!(
            signed_forms("fit-in/100x100/a.jpg"),
            ["fit-in/100x100/a.jpg"]
        );
        assert_eq!(
            signed_forms("fit-in/100x100/a~b.jpg"),
            ["fit-in/100x100/a~b.jpg", "fit-in/100x100/a%7Eb.jpg"]
        );
        assert_eq!(signed_forms("a%7Cb%5E"), ["a%7Cb%5E", "a|b^"]);
        assert_eq!(signed_forms("a~%7C"), ["a~%7C", "a%7E%7C", "a~|", "a%7E|"]);
    }

    #[test]
    fn the_query_string_is_left_as_received() {
        assert_eq!(
            signed_forms("h/a~b.jpg?w=1&t=~%7C"),
            ["h/a~b.jpg?w=1&t=~%7C", "h/a%7Eb.jpg?w=1&t=~%7C"]
        );
    }

    #[test]
    fn every_form_decodes_as_the_received_path_does() {
        for received in ["a~b/c%7C%7B%7D%22%3C%3E%5E%60~.jpg", "x%20~y", "%7E~"] {
            let decoded = crate::percent::decode(received).unwrap();
            for form in signed_forms(received) {
                assert_eq!(crate::percent::decode(&form).unwrap(), decoded, "{form}");
            }
        }
    }

    #[test]
    fn merged_plain_sources_get_their_slashes_back() {
        assert_eq!(
            unmerged_source("/SIG/rs:fit:1:1/plain/s3:/b/k.jpg").as_deref(),
            Some("/SIG/rs:fit:1:1/plain/s3://b/k.jpg")
        );
        assert_eq!(
            unmerged_source("SIG/plain/local:/dir/k.jpg@png").as_deref(),
            Some("SIG/plain/local:///dir/k.jpg@png")
        );
        for unchanged in [
            "/SIG/plain/s3://b/k.jpg",
            "/SIG/plain/local:///k.jpg",
            "/SIG/plain/k.jpg",
            "/SIG/rs:fit:1:1/czM6Ly9iL2suanBn",
            "/SIG/plain/dir/s3:/b",
        ] {
            assert_eq!(unmerged_source(unchanged), None, "{unchanged}");
        }
    }

    /// A URL signed as the client sent it, and the path Envoy hands the filter.
    fn normalised(url: &str) -> String {
        url.replace("%7E", "~").replace('|', "%7C")
    }

    #[test]
    fn urls_signed_with_escapes_envoy_changes_verify_in_every_grammar() {
        use crate::router::{Decision, Router};
        let router = Router::from_json(
            br#"{"routes":[
                {"prefix":"/t/","storage":"s","secret":"thumbor-key"},
                {"prefix":"/ip/","grammar":"imgproxy","storage":"s",
                 "keys":[{"key":"736563726574","salt":"68656C6C6F"}]},
                {"prefix":"/ik/","grammar":"imagekit","storage":"s","secret":"ik-key"},
                {"prefix":"/q/","grammar":"query","storage":"s","secret":"q-key"}]}"#,
        )
        .unwrap();
        let now = std::time::SystemTime::UNIX_EPOCH;
        let key = |d: Decision| match d {
            Decision::Render(r) => Ok(r.request.key),
            Decision::Reject(r) => Err(r.status),
            Decision::Pass => Err(0),
        };
        for unsigned in [
            "/t/unsafe/fit-in/100x100/a%7Eb|c.jpg",
            "/ip/insecure/rs:fit:100:100/plain/a%7Eb|c.jpg",
            "/ik/tr:w-100/a%7Eb|c.jpg",
            "/q/s/a%7Eb|c.jpg?w=100",
        ] {
            let signed = router.sign(unsigned).unwrap();
            let as_sent = key(router.decide("GET", &signed, None, now));
            assert_eq!(as_sent, Ok("a~b|c.jpg".to_owned()), "{signed}");
            let received = normalised(&signed);
            assert_ne!(received, signed);
            assert_eq!(
                key(router.decide("GET", &received, None, now)),
                as_sent,
                "{received}"
            );
            // The signature still covers the image: another one is refused.
            let other = received.replace("b%7Cc", "b%7Cd");
            assert_eq!(
                key(router.decide("GET", &other, None, now)),
                Err(403),
                "{other}"
            );
        }
    }

    #[test]
    fn imgproxy_sources_with_merged_slashes_verify_and_read_as_signed() {
        use crate::router::{Decision, Router};
        let router = Router::from_json(
            br#"{"routes":[{"prefix":"/ip/","grammar":"imgproxy","storage":"s",
                 "keys":[{"key":"736563726574","salt":"68656C6C6F"}]}]}"#,
        )
        .unwrap();
        let now = std::time::SystemTime::UNIX_EPOCH;
        let request = |path: &str| match router.decide("GET", path, None, now) {
            Decision::Render(r) => Ok((r.request.storage, r.request.key)),
            Decision::Reject(r) => Err(r.status),
            Decision::Pass => Err(0),
        };
        for (source, merged) in [
            ("s3://s/dir/k.jpg", "s3:/s/dir/k.jpg"),
            ("local:///dir/k.jpg", "local:/dir/k.jpg"),
        ] {
            let signed = router
                .sign(&format!("/ip/insecure/rs:fit:100:100/plain/{source}"))
                .unwrap();
            let want = request(&signed);
            assert_eq!(
                want,
                Ok(("s".to_owned(), "dir/k.jpg".to_owned())),
                "{signed}"
            );
            let received = signed.replace(source, merged);
            assert_eq!(request(&received), want, "{received}");
            let other = received.replace("k.jpg", "l.jpg");
            assert_eq!(request(&other), Err(403), "{other}");
        }
    }
}
