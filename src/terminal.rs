//! What the CLI does differently on a terminal: progress bars, and asking before it changes anything.
//!
//! Progress bars draw on stderr only when stderr is a terminal, so scripts and logs get clean output.
//! Commands that change the configuration (revert, undo, import, sync, live restore) show a preview first and
//! then ask; without a terminal nobody can answer, so they refuse unless `--yes` was given — a script must say
//! so explicitly.

use std::io::{IsTerminal, Write};

use indicatif::{ProgressBar, ProgressStyle};

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
    fn only_y_or_yes_is_a_yes() {
        assert!(is_yes("y\n") && is_yes(" YES ") && is_yes("Yes\r\n"));
        assert!(!is_yes("") && !is_yes("n") && !is_yes("yeah") && !is_yes("no\n"));
    }
}
