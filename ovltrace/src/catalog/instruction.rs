//! Image history instructions (`created_by`) as people read them: the
//! Dockerfile line, without the builders' wrapping, with content hashes
//! shortened and the destination of a COPY or ADD kept whole.
//!
//! Every human output (terminal report, live view, `ovltrace layers`, HTML)
//! shows instructions through [`display`]; JSON keeps `created_by` as the
//! image has it.
//!
//! What the builders write (real examples are in the tests):
//! - the legacy builder: `/bin/sh -c #(nop) COPY file:<sha256> in /dest `,
//!   `/bin/sh -c #(nop) ADD dir:<sha256> in / `, `COPY multi:<sha256> ...`,
//!   `--chown=u:g` glued to the source (`--chown=app:appfile:<sha256>`),
//!   `/bin/sh -c #(nop)  ENV A=1` for instructions that run nothing, and
//!   `/bin/sh -c <cmd>` for RUN, `|N K=V ... /bin/sh -c <cmd>` when N build
//!   arguments were in scope;
//! - BuildKit: the Dockerfile line with ` # buildkit` after it (`COPY app
//!   /app # buildkit`, `RUN /bin/sh -c <cmd> # buildkit`, `RUN |1 K=V
//!   /bin/sh -c <cmd> # buildkit`), and bare lines for instructions that make
//!   no layer (`ENV A=1`, `WORKDIR /app`);
//! - nothing at all (`created_by` empty or missing) for a layer made by
//!   `docker import`, or by a tool that squashes or writes images without
//!   history.

/// What a layer without history shows instead of an instruction.
pub const NO_HISTORY: &str = "(no history: imported or squashed layer)";

/// Hex digits kept of a content hash (`file:01344f2ea10c…`).
const HASH_KEPT: usize = 12;

/// The instruction that made a layer, for display in at most `width`
/// characters (`usize::MAX`: no limit): see the module documentation.
/// `None` (the layer's instruction is not known) shows as nothing; an empty
/// `created_by` (the image says the layer has no history) as [`NO_HISTORY`].
///
/// The result is one line but is not escaped: callers escape it for their
/// output (terminal or HTML), as they do any text from an image.
pub fn display(created_by: Option<&str>, width: usize) -> String {
    let Some(raw) = created_by else {
        return String::new();
    };
    if raw.trim().is_empty() {
        return NO_HISTORY.to_string();
    }
    fit(&readable(raw), width)
}

/// The Dockerfile line of a `created_by`, whole.
fn readable(raw: &str) -> String {
    // One line: RUN commands are often continued over several.
    let mut s: String = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(rest) = s.strip_suffix("# buildkit") {
        s = rest.trim_end().to_string();
    }
    let line = if let Some(rest) = s.strip_prefix("/bin/sh -c #(nop)") {
        // An instruction that ran nothing (COPY, ADD, ENV, ...).
        rest.trim_start().to_string()
    } else if let Some(rest) = s.strip_prefix("RUN ") {
        format!("RUN {}", run_command(rest))
    } else if s.starts_with("/bin/sh -c ") || is_build_args(&s) {
        // The legacy builder's RUN.
        format!("RUN {}", run_command(&s))
    } else {
        s
    };
    match line.split_once(' ') {
        Some((op @ ("COPY" | "ADD"), rest)) => format!("{op} {}", sources(rest)),
        _ => line,
    }
}

/// `|N K=V ...` in front of a RUN: the build arguments in scope.
fn is_build_args(s: &str) -> bool {
    s.strip_prefix('|')
        .and_then(|r| r.split(' ').next())
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A RUN's command without the build arguments and the default shell.
fn run_command(s: &str) -> &str {
    let mut s = s;
    if is_build_args(s) {
        let (count, rest) = s[1..].split_once(' ').unwrap_or((&s[1..], ""));
        let n: usize = count.parse().unwrap_or(0);
        // Values may hold spaces: where the default shell starts is surer
        // than counting words.
        s = match rest.find("/bin/sh -c ") {
            Some(at) => &rest[at..],
            None => {
                let mut r = rest;
                for _ in 0..n {
                    r = r.split_once(' ').map_or("", |(_, t)| t);
                }
                r
            }
        };
    }
    s.strip_prefix("/bin/sh -c ").unwrap_or(s).trim()
}

/// COPY/ADD arguments with the legacy builder's content hashes shortened
/// (and split from a `--chown=` they are glued to).
fn sources(args: &str) -> String {
    args.split(' ')
        .map(|word| {
            for kind in ["file:", "dir:", "multi:"] {
                let Some(at) = word.rfind(kind) else { continue };
                let hash = &word[at + kind.len()..];
                if hash.len() >= 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    let glued = &word[..at];
                    let sep = if glued.is_empty() { "" } else { " " };
                    return format!("{glued}{sep}{kind}{}…", &hash[..HASH_KEPT]);
                }
            }
            word.to_string()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` in at most `width` characters. A COPY or ADD that is too long loses
/// the middle of its sources, never its destination (` in DEST` of the
/// legacy builder, the last word of BuildKit's); anything else loses its end.
fn fit(s: &str, width: usize) -> String {
    let len = s.chars().count();
    if len <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let is_copy = s.starts_with("COPY ") || s.starts_with("ADD ");
    let dest_at = if !is_copy {
        None
    } else if let Some(at) = s.rfind(" in ") {
        Some(at)
    } else {
        s.rfind(' ')
    };
    if let Some(at) = dest_at {
        let dest = &s[at..];
        let dest_len = dest.chars().count();
        // Keep at least the instruction's name and a little of its sources.
        if dest_len + 10 <= width {
            let head: String = s[..at].chars().take(width - dest_len - 1).collect();
            return format!("{head}…{dest}");
        }
    }
    let mut t: String = s.chars().take(width - 1).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(created_by: &str) -> String {
        display(Some(created_by), usize::MAX)
    }

    /// `created_by` strings of the legacy builder, as `docker history
    /// --no-trunc` and image configs in public repositories show them.
    #[test]
    fn legacy_builder() {
        // Image config of alpine 3.14's base layer.
        assert_eq!(
            show("/bin/sh -c #(nop) ADD file:aad4290d27580cc1a094ffaf98c3ca2fc5d699fe695dfb8e6e9fac20f1129450 in / "),
            "ADD file:aad4290d2758… in /"
        );
        // A COPY of one file into a directory (calico's image config).
        assert_eq!(
            show("/bin/sh -c #(nop) COPY file:8a0dcac8c05d3fce4e448fe2cc2458c5ec2bb6ab2d62dc341ae634b03bfab586 in /licenses "),
            "COPY file:8a0dcac8c05d… in /licenses"
        );
        assert_eq!(
            show("/bin/sh -c #(nop) ADD file:596916f5354bf145741ebef912c0c45bb9cecfb54b3b1712b909ab4811a37ed0 in /calico.conf.tmp "),
            "ADD file:596916f5354b… in /calico.conf.tmp"
        );
        // --chown is glued to the source's hash.
        assert_eq!(
            show("/bin/sh -c #(nop) COPY --chown=oracle:dbadir:7f7ee78c2762cb56f03228b45ce0c0301ea5fd88c4ac14dd98d74eb5621054e4 in /opt/oracle"),
            "COPY --chown=oracle:dba dir:7f7ee78c2762… in /opt/oracle"
        );
        assert_eq!(
            show("/bin/sh -c #(nop) COPY --chown=app:appfile:24e216b758a41629b4357c4cd3aa1676635e7f68b432edff5124a8af4b95362f in /etc/hosting.ini "),
            "COPY --chown=app:app file:24e216b758a4… in /etc/hosting.ini"
        );
        // Instructions that make no layer: two spaces after `#(nop)`.
        assert_eq!(
            show("/bin/sh -c #(nop)  CMD [\"/bin/sh\"]"),
            "CMD [\"/bin/sh\"]"
        );
        assert_eq!(show("/bin/sh -c #(nop) WORKDIR /app"), "WORKDIR /app");
        // RUN, and RUN with build arguments in scope (calico's image config).
        assert_eq!(
            show("/bin/sh -c apt-get update &&\n\tapt-get install -y x"),
            "RUN apt-get update && apt-get install -y x"
        );
        assert_eq!(
            show("|1 GIT_VERSION=v3.11.3 /bin/sh -c microdnf install hostname && mkdir /licenses"),
            "RUN microdnf install hostname && mkdir /licenses"
        );
        assert_eq!(
            show("|0 /bin/sh -c chmod ug+x $INSTALL_DIR/*.sh"),
            "RUN chmod ug+x $INSTALL_DIR/*.sh"
        );
        // A build argument whose value has a space.
        assert_eq!(show("|2 A=x B=y z /bin/sh -c true"), "RUN true");
    }

    /// `created_by` strings of BuildKit (image configs in public
    /// repositories and registries).
    #[test]
    fn buildkit() {
        assert_eq!(
            show("COPY nginx/conf.d/test.conf /etc/nginx/conf.d/test.conf # buildkit"),
            "COPY nginx/conf.d/test.conf /etc/nginx/conf.d/test.conf"
        );
        assert_eq!(show("COPY app/ ./ # buildkit"), "COPY app/ ./");
        assert_eq!(
            show("ADD alpine-minirootfs-3.20.3-x86_64.tar.gz / # buildkit"),
            "ADD alpine-minirootfs-3.20.3-x86_64.tar.gz /"
        );
        assert_eq!(
            show("RUN /bin/sh -c apt-get update && apt-get install -y openssh-server # buildkit"),
            "RUN apt-get update && apt-get install -y openssh-server"
        );
        assert_eq!(
            show("RUN |1 DEBIAN_FRONTEND=noninteractive /bin/sh -c apt update -y && apt upgrade -y # buildkit"),
            "RUN apt update -y && apt upgrade -y"
        );
        // Another shell (SHELL ["/bin/bash", "-c"]) is shown.
        assert_eq!(
            show("RUN |2 A=1 B=2 /bin/bash -c pip install -e /w # buildkit"),
            "RUN /bin/bash -c pip install -e /w"
        );
        // The exec form, and instructions that make no layer.
        assert_eq!(
            show("RUN sh -c echo hi > /flag.txt # buildkit"),
            "RUN sh -c echo hi > /flag.txt"
        );
        assert_eq!(show("WORKDIR /app"), "WORKDIR /app");
        assert_eq!(show("EXPOSE map[8080/tcp:{}]"), "EXPOSE map[8080/tcp:{}]");
    }

    #[test]
    fn layers_without_history() {
        assert_eq!(display(Some(""), 60), NO_HISTORY);
        assert_eq!(display(Some("  "), 60), NO_HISTORY);
        assert_eq!(display(None, 60), "");
    }

    #[test]
    fn long_copies_keep_their_destination() {
        let legacy = "/bin/sh -c #(nop) COPY --chown=1000:1000multi:01344f2ea10c2be8c3f5a2e2b1f1f1e0d7c7b5a0c3f5a2e2b1f1f1e0d7c7b5a0 in /var/lib/app/ ";
        let s = display(Some(legacy), 40);
        assert_eq!(s.chars().count(), 40, "{s}");
        assert!(s.starts_with("COPY --chown=1000:1000"), "{s}");
        assert!(s.ends_with("… in /var/lib/app/"), "{s}");
        let bk = "COPY --from=builder /src/target/release/server /src/config/ /opt/app/ # buildkit";
        let s = display(Some(bk), 40);
        assert_eq!(s.chars().count(), 40, "{s}");
        assert!(s.starts_with("COPY --from=builder"), "{s}");
        assert!(s.ends_with("… /opt/app/"), "{s}");
        // A destination too long to keep whole: the end goes.
        let s = display(Some(&format!("COPY a /{}", "d".repeat(80))), 30);
        assert_eq!(s.chars().count(), 30);
        assert!(s.starts_with("COPY a /ddd") && s.ends_with('…'), "{s}");
        // Anything else loses its end.
        let s = display(Some(&format!("/bin/sh -c {}", "y".repeat(100))), 60);
        assert_eq!(s.chars().count(), 60);
        assert!(s.starts_with("RUN yyy") && s.ends_with('…'), "{s}");
        assert_eq!(display(Some("ENV A=1"), 0), "");
    }

    #[test]
    fn text_is_left_for_the_caller_to_escape() {
        // Whitespace controls are folded into spaces; others stay, for the
        // output's own escaping.
        assert_eq!(show("/bin/sh -c echo \x1b[2J"), "RUN echo \x1b[2J");
        assert_eq!(show("/bin/sh -c a\nb"), "RUN a b");
    }
}
