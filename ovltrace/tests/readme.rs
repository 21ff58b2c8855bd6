//! The manual agrees with the binary: every `ovltrace` command shown in
//! README.md and docs/*.md parses, and every sample error it quotes is one
//! the code can print.

use std::{fs, path::Path, process::Command};

use clap::Parser;
use ovltrace::cli::Cli;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// README.md and every Markdown file under docs/.
fn manuals() -> Vec<(String, String)> {
    let mut files = vec![root().join("README.md")];
    for entry in fs::read_dir(root().join("docs")).expect("docs/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).expect("readable manual");
            (p.display().to_string(), text)
        })
        .collect()
}

/// Command lines in fenced code blocks: every line of a `sh` block, and the
/// lines after a `$ ` prompt in other blocks (the rest is output).
fn code_lines(text: &str) -> Vec<&str> {
    let mut block: Option<&str> = None;
    let mut out = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(tag) = trimmed.strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(tag.trim()),
            };
        } else if let Some(tag) = block {
            if tag == "sh" || trimmed.starts_with("$ ") {
                out.push(line);
            }
        }
    }
    out
}

/// The arguments of an `ovltrace` command line shown in a manual (prompt,
/// `sudo` and trailing comment removed), or None when the line is not one.
/// Synopsis lines (`[--json]`, `auto|fentry`) are not commands.
fn command_args(line: &str) -> Option<Vec<String>> {
    let line = line.trim().trim_start_matches("$ ").trim_start();
    let line = line.strip_prefix("sudo ").unwrap_or(line).trim_start();
    let rest = line.strip_prefix("ovltrace ")?;
    let rest = match rest.find(" #") {
        Some(at) => &rest[..at],
        None => rest,
    };
    if rest.contains('[') || rest.contains('|') || rest.contains('\\') {
        return None;
    }
    let mut args = vec!["ovltrace".to_string()];
    args.extend(rest.split_whitespace().map(str::to_string));
    Some(args)
}

#[test]
fn every_command_in_the_manuals_parses() {
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (name, text) in manuals() {
        for line in code_lines(&text) {
            let Some(args) = command_args(line) else {
                continue;
            };
            checked += 1;
            if let Err(e) = Cli::try_parse_from(&args) {
                wrong.push(format!("{name}: `{}`: {}", line.trim(), e.kind()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "commands that do not parse:\n{}",
        wrong.join("\n")
    );
    assert!(
        checked >= 10,
        "only {checked} commands found: is the scan broken?"
    );
}

#[test]
fn the_scanner_rejects_a_wrong_command() {
    let args = command_args("sudo ovltrace run --no-such-flag   # comment").unwrap();
    assert_eq!(args, ["ovltrace", "run", "--no-such-flag"]);
    assert!(Cli::try_parse_from(&args).is_err());
    assert!(command_args("ovltrace run [-d 30s]").is_none());
    // A message the code never printed has a fixed part the sources lack.
    let parts = fixed_parts("b.json: this sentence was never an error of ovltrace 2");
    assert_eq!(parts, ["this sentence was never an error of ovltrace"]);
    assert!(!sources().contains(&parts[0]));
}

/// All of ovltrace/src as one text, to look for message fragments in.
fn sources() -> String {
    fn walk(dir: &Path, out: &mut String) {
        for entry in fs::read_dir(dir).expect("readable src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push_str(&fs::read_to_string(&path).expect("readable source"));
            }
        }
    }
    let mut out = String::new();
    walk(&root().join("ovltrace/src"), &mut out);
    out
}

/// The fixed parts of a message: the text between the parts that vary
/// (numbers, paths, names in quotes or backquotes), at least 12 characters.
fn fixed_parts(message: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    for word in message.split(' ') {
        let varies = word.chars().any(|c| c.is_ascii_digit())
            || word.contains('/')
            || word.contains('`')
            || word.contains('"')
            || word.contains(".json");
        if varies {
            if current.trim().len() >= 12 {
                parts.push(current.trim().to_string());
            }
            current.clear();
        } else {
            current.push_str(word);
            current.push(' ');
        }
    }
    if current.trim().len() >= 12 {
        parts.push(current.trim().to_string());
    }
    parts
}

#[test]
fn every_sample_error_is_one_the_code_prints() {
    let src = sources();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (name, text) in manuals() {
        for line in text.lines() {
            let Some(at) = line.find("ovltrace: error: ") else {
                continue;
            };
            let message = line[at + "ovltrace: error: ".len()..].trim_end_matches(['`', '.']);
            for part in fixed_parts(message) {
                checked += 1;
                if !src.contains(&part) {
                    wrong.push(format!("{name}: {part:?} (from {message:?})"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "sample errors whose text is not in ovltrace/src:\n{}",
        wrong.join("\n")
    );
    assert!(
        checked >= 3,
        "only {checked} fragments found: is the scan broken?"
    );
}

/// The README's sample of a refused report is what the binary prints, to
/// the letter.
#[test]
fn the_refused_report_sample_is_exact() {
    let readme = fs::read_to_string(root().join("README.md")).expect("README");
    let sample = readme
        .lines()
        .find(|l| l.starts_with("ovltrace: error: b.json: unsupported schema_version"))
        .expect("the README shows a refused report");
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("b.json"), r#"{"schema_version": 9}"#).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_ovltrace"))
        .args(["report", "b.json"])
        .current_dir(dir.path())
        .output()
        .expect("running ovltrace");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().next(), Some(sample), "{stderr}");
}
