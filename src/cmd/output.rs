//! Everything a command shows: `--json` printing, the one-line outcome of a write, times, progress bars, and
//! asking before it changes anything. (Tables of one command live beside that command.)
//!
//! Progress bars draw on stderr only when stderr is a terminal, so scripts and logs get clean output.
//! Commands that change the configuration (revert, undo, import, sync, live restore) show a preview first and
//! then ask; without a terminal nobody can answer, so they refuse unless `--yes` was given — a script must say
//! so explicitly.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use super::Context;

/// Prints a value as pretty JSON on stdout (what `--json` means).
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

/// The answer of a write: `accepted at revision 7`, or the answer itself when it names no revision.
pub fn print_outcome(ctx: &Context, answer: &Value) {
    if ctx.json {
        print_json(answer);
    } else if let Some(revision) = answer["revision"].as_u64() {
        println!("{} at revision {revision}", answer["outcome"].as_str().unwrap_or("done"));
    } else {
        print_json(answer);
    }
}

/// A Unix time in milliseconds as RFC 3339 (UTC).
pub fn format_time(unix_ms: u64) -> String {
    tandem_cluster::node::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms))
}

/// A progress bar counting `total` bytes, labelled `label`; hidden when stderr is not a terminal.
pub fn byte_progress(total: u64, label: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(label.to_string());
    bar
}

/// A progress bar shows the client library's transfers.
impl crate::client::Progress for ProgressBar {
    fn start(&self, label: &str, total: u64) {
        self.reset();
        self.set_length(total);
        self.set_message(label.to_string());
    }
    fn advance(&self, bytes: u64) {
        self.inc(bytes);
    }
    fn finish(&self) {
        self.finish_and_clear();
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Whether someone can answer a question on stdin.
pub fn can_ask() -> bool {
    std::io::stdin().is_terminal()
}

/// Asks `question` on the terminal (stderr, then a line from stdin, read off the async runtime's threads).
/// Only "y" or "yes" (any case) is a yes; an unreadable answer is a no.
pub async fn confirm(question: &str) -> bool {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default();
    is_yes(&answer)
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }

    #[test]
    fn only_y_or_yes_is_a_yes() {
        assert!(is_yes("y\n") && is_yes(" YES ") && is_yes("Yes\r\n"));
        assert!(!is_yes("") && !is_yes("n") && !is_yes("yeah") && !is_yes("no\n"));
    }
}
