//! `tandem man`: the manual page, tandem(1), rendered from the same clap definitions as `--help` (so the two
//! cannot disagree), with one section per command. The Debian package installs it
//! (`packaging/build-deb.sh`); a test checks that every command it lists has a row in docs/operations.md's
//! command reference and the reverse.

use std::io::Write;

use clap::CommandFactory;

use super::Cli;

/// The page: the top-level synopsis and options, then every command and subcommand with its own options.
pub fn render() -> std::io::Result<Vec<u8>> {
    let command = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut out)?;
    for (path, sub) in command_paths(&command) {
        let name = format!("tandem {path}");
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        let mut section = Vec::new();
        clap_mangen::Man::new(sub.clone()).render_description_section(&mut section)?;
        clap_mangen::Man::new(sub.clone()).render_options_section(&mut section)?;
        // Each part renders its own `.SH` heading: keep them as sub-headings of this command's section.
        let section = String::from_utf8_lossy(&section).replace(".SH ", ".SS ");
        out.extend_from_slice(section.as_bytes());
    }
    Ok(out)
}

/// Prints the page on stdout.
pub fn print() -> std::io::Result<()> {
    std::io::stdout().write_all(&render()?)
}

/// Every visible command as its path (`servers add`), depth first, with its clap definition; a command
/// with subcommands is listed with them (`history` and `history verify`).
pub fn command_paths(root: &clap::Command) -> Vec<(String, clap::Command)> {
    let mut paths = Vec::new();
    for sub in root.get_subcommands().filter(|c| !c.is_hide_set() && c.get_name() != "help") {
        let name = sub.get_name().to_string();
        let nested = command_paths(sub);
        if nested.is_empty() || !sub.get_arguments().all(|a| a.is_global_set() || a.get_id() == "help") {
            paths.push((name.clone(), sub.clone()));
        }
        paths.extend(nested.into_iter().map(|(path, command)| (format!("{name} {path}"), command)));
    }
    paths
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The commands listed in docs/operations.md's command reference (the first column of each row).
    fn documented() -> BTreeSet<String> {
        let guide = include_str!("../../docs/operations.md");
        let table = guide.split("\n## Command reference").nth(1).expect("a command reference section");
        let table = table.split("\n## ").next().unwrap_or_default();
        table
            .lines()
            .filter_map(|line| line.strip_prefix("| `"))
            .filter_map(|rest| rest.split('`').next())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn the_manual_and_the_operations_guide_list_the_same_commands() {
        let commands: BTreeSet<String> = command_paths(&Cli::command())
            .into_iter()
            .map(|(path, _)| path)
            // `bench …` exists only in builds with the `bench` feature; the guide has one row for all.
            .filter(|path| !path.starts_with("bench"))
            .collect();
        let mut documented = documented();
        documented.remove("bench");
        let undocumented: Vec<&String> = commands.difference(&documented).collect();
        let unknown: Vec<&String> = documented.difference(&commands).collect();
        assert!(undocumented.is_empty(), "commands without a row in docs/operations.md: {undocumented:?}");
        assert!(unknown.is_empty(), "rows in docs/operations.md that are no command: {unknown:?}");
    }

    #[test]
    fn the_manual_has_a_section_for_every_command() {
        let page = String::from_utf8(render().unwrap()).unwrap();
        for (path, _) in command_paths(&Cli::command()) {
            let heading = format!(".SH \"TANDEM {}\"", path.to_uppercase());
            assert!(page.contains(&heading), "no section {heading}");
        }
    }
}
