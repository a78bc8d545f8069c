//! Small helpers shared by the process wrappers.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

/// Poll interval of every wait loop in the harness.
pub(crate) const POLL: Duration = Duration::from_millis(25);

/// `n` random bytes, hex-encoded (lower case).
pub(crate) fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("operating system random number generator");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The content of a text file, or an empty string when it cannot be read.
pub(crate) fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> &str {
    let trimmed = text.trim_end_matches('\n');
    match trimmed.rmatch_indices('\n').nth(n.saturating_sub(1)) {
        Some((i, _)) if n > 0 => &trimmed[i + 1..],
        _ if n == 0 => "",
        _ => trimmed,
    }
}

/// Kills `child` (SIGKILL) and reaps it. Errors are ignored: the process may already be gone.
pub(crate) fn kill_and_wait(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_returns_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a\nb\nc", 5), "a\nb\nc");
        assert_eq!(tail("a\nb\nc", 0), "");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn random_hex_has_requested_length() {
        let h = random_hex(12);
        assert_eq!(h.len(), 24);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(h, random_hex(12));
    }
}
