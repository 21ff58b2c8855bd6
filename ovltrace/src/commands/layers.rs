//! `ovltrace layers`: the layer stack of every running container.
use std::{fmt::Write as _, process::ExitCode};

use anyhow::Context;
use serde::Serialize;

use crate::{
    catalog::{
        inventory,
        runtimes::{
            containerd::ContainerdResolver, docker::DockerResolver, podman::PodmanResolver,
        },
        ContainerInfo, LayerInfo, Resolver,
    },
    cli::LayersArgs,
    sys::mounts::{self, path_display, OverlayMount},
    text,
};

/// 2: `runtimes` (each with its roots) replaced the single `runtime`.
pub const SCHEMA_VERSION: u32 = 2;

#[derive(Serialize)]
struct Output<'a> {
    schema_version: u32,
    /// The runtimes looked for, and the roots where each found metadata.
    runtimes: Vec<RuntimeRoots>,
    docker_root: Option<String>,
    containers: &'a [ContainerInfo],
    mounts: &'a [OverlayMount],
}

#[derive(Serialize)]
struct RuntimeRoots {
    name: &'static str,
    roots: Vec<String>,
}

pub fn main(args: LayersArgs) -> anyhow::Result<ExitCode> {
    let all = mounts::read_overlay_mounts()?;
    let mut docker = DockerResolver::new(args.docker.docker_root.clone());
    let mut containerd = ContainerdResolver::new();
    let mut podman = PodmanResolver::new(args.docker.podman_root.clone());
    let mut inv = inventory(
        [
            &mut docker as &mut dyn Resolver,
            &mut containerd as &mut dyn Resolver,
            &mut podman as &mut dyn Resolver,
        ],
        &all,
    );
    // Everything is shown: read what the resolvers deferred.
    for c in &mut inv.containers {
        c.complete();
        crate::catalog::number_layers(&mut c.layers);
    }
    inv.containers
        .sort_by(|a, b| a.display_name().cmp(b.display_name()).then(a.id.cmp(&b.id)));
    let docker_root = docker.root().map(|(p, _)| path_display(p));
    let roots = |ps: &[std::path::PathBuf]| ps.iter().map(|p| path_display(p)).collect();
    let runtimes = vec![
        RuntimeRoots {
            name: docker.runtime(),
            roots: docker_root.iter().cloned().collect(),
        },
        RuntimeRoots {
            name: containerd.runtime(),
            roots: roots(containerd.roots()),
        },
        RuntimeRoots {
            name: podman.runtime(),
            roots: roots(podman.roots()),
        },
    ];
    if args.json {
        let out = Output {
            schema_version: SCHEMA_VERSION,
            runtimes,
            docker_root,
            containers: &inv.containers,
            mounts: &inv.mounts,
        };
        let mut s = serde_json::to_string_pretty(&out).context("encoding JSON")?;
        s.push('\n');
        print_out(&s)?;
    } else {
        print_out(&table(&inv.containers, &inv.mounts))?;
    }
    if inv.containers.is_empty() && unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "ovltrace: note: container runtimes' metadata is only readable by root; try sudo"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_out(s: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|_| out.flush()) {
        // `ovltrace layers | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

/// The human-readable report.
pub fn table(containers: &[ContainerInfo], plain: &[OverlayMount]) -> String {
    let mut s = String::new();
    if containers.is_empty() {
        s.push_str("No running containers found.\n");
    }
    for c in containers {
        let _ = writeln!(
            s,
            "CONTAINER {} ({})",
            text::terminal(c.display_name()),
            c.short_id()
        );
        let image = match (&c.image.id, c.image.tags.is_empty()) {
            (Some(id), false) => format!(
                "{} ({})",
                text::terminal(&c.image.tags.join(", ")),
                short_digest(id)
            ),
            (Some(id), true) => short_digest(id),
            (None, _) => "unknown".into(),
        };
        let _ = writeln!(s, "  runtime: {}", text::terminal(c.runtime));
        if let Some(pod) = &c.pod {
            let _ = writeln!(
                s,
                "  pod:     {}{}",
                text::terminal(&pod.name),
                pod.namespace
                    .as_deref()
                    .map(|n| format!(" (namespace {})", text::terminal(n)))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(s, "  image:   {image}");
        let _ = writeln!(
            s,
            "  overlay: dev {} at {}",
            c.dev,
            text::terminal(&path_display(&c.mountpoint))
        );
        layer_table(&mut s, c);
        s.push('\n');
    }
    if !plain.is_empty() {
        s.push_str("OTHER OVERLAY MOUNTS (no container)\n");
        for m in plain {
            let _ = writeln!(
                s,
                "  dev {} at {}: {} lower layer{}",
                m.dev,
                text::terminal(&path_display(&m.mountpoint)),
                m.lowerdirs.len(),
                if m.lowerdirs.len() == 1 { "" } else { "s" }
            );
            for (i, d) in m.lowerdirs.iter().enumerate() {
                let _ = writeln!(s, "    {:>3}  {}", i + 1, text::terminal(&path_display(d)));
            }
        }
    }
    s
}

/// A container's layers, uppermost first as `docker history` lists them,
/// numbered as every output numbers them ([`crate::catalog::number_layers`]).
fn layer_table(s: &mut String, c: &ContainerInfo) {
    let total = c.layers.iter().filter(|l| !l.init).count();
    let rows: Vec<[String; 4]> = std::iter::once([
        "rw".into(),
        "".into(),
        "-".into(),
        "(container read-write layer)".into(),
    ])
    .chain(c.layers.iter().map(|l| layer_row(l, total)))
    .collect();
    let header = ["LAYER", "DIFF-ID", "SIZE", "CREATED BY"];
    let widths: Vec<usize> = (0..3)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in std::iter::once(header.map(String::from)).chain(rows) {
        let _ = writeln!(
            s,
            "  {:<w0$}  {:<w1$}  {:>w2$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
    }
}

fn layer_row(l: &LayerInfo, total: usize) -> [String; 4] {
    let pos = match l.number {
        Some(n) => format!("{n}/{total}"),
        None if l.init => "init layer".into(),
        None => "?".into(),
    };
    let diff = l
        .diff_id
        .as_deref()
        .map(short_digest)
        .unwrap_or_else(|| "-".into());
    let size = l
        .size
        .map(crate::units::fmt_bytes)
        .unwrap_or_else(|| "-".into());
    let what = if l.init {
        "(init layer: /etc/hosts, /etc/resolv.conf, ...)".to_string()
    } else {
        match (&l.created_by, &l.comment) {
            (Some(c), Some(comment)) if c.trim().is_empty() && !comment.is_empty() => {
                format!(
                    "{}; comment: {}",
                    crate::catalog::instruction::NO_HISTORY,
                    truncate(&text::terminal(comment), 80)
                )
            }
            (Some(c), _) => text::terminal(&crate::catalog::instruction::display(Some(c), 100)),
            (None, _) => "(unknown)".into(),
        }
    };
    [pos, diff, size, what]
}

/// `sha256:0123456789abcdef...` -> `0123456789ab`.
pub fn short_digest(d: &str) -> String {
    text::terminal(crate::catalog::short_digest(d))
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max - 1).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{catalog::ImageInfo, sys::mounts::Dev};

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(text::terminal("a\x1b[31mred\x07"), "a\\u{1b}[31mred\\u{7}");
    }

    /// A hostile image's instruction, tag and a container name cannot
    /// reorder or recolour what `layers` prints (they used to go out raw
    /// when they held bidi controls).
    #[test]
    fn hostile_text_is_shown_escaped() {
        let hostile = "x\u{202e}gnp.exe\u{2066}\x1b[2J\r\0";
        let mut c = ContainerInfo {
            id: "c80a5fd00c1b48972e13472e224d6158744edf581227782ff6ccaf1db5934d61".into(),
            name: Some(hostile.into()),
            image: ImageInfo {
                id: None,
                tags: vec![hostile.into()],
            },
            mountpoint: "/m".into(),
            dev: Dev::new(0, 39),
            runtime: "docker",
            upperdir: None,
            layers: vec![LayerInfo {
                index: 1,
                position: Some(1),
                created_by: Some(format!("/bin/sh -c echo {hostile}")),
                ..Default::default()
            }],
            pod: None,
            mount_id: 1,
        };
        crate::catalog::number_layers(&mut c.layers);
        let t = table(&[c], &[]);
        for ch in t.chars() {
            assert!(
                ch == '\n'
                    || !(ch.is_control()
                        || ('\u{2066}'..='\u{2069}').contains(&ch)
                        || ('\u{202a}'..='\u{202e}').contains(&ch)),
                "raw {ch:?} in {t}"
            );
        }
        assert!(t.contains("x\\u{202e}gnp.exe\\u{2066}\\u{1b}[2J"), "{t}");
    }

    #[test]
    fn sizes() {
        assert_eq!(crate::units::fmt_bytes(11), "11 B");
        assert_eq!(crate::units::fmt_bytes(1048699), "1.0 MiB");
        assert_eq!(crate::units::fmt_bytes(1984177), "1.9 MiB");
    }

    #[test]
    fn table_shows_the_stack() {
        let c = ContainerInfo {
            id: "c80a5fd00c1b48972e13472e224d6158744edf581227782ff6ccaf1db5934d61".into(),
            name: Some("web\n1".into()),
            image: ImageInfo {
                id: Some(format!("sha256:{}", "ab".repeat(32))),
                tags: vec!["shop/api:2.3".into()],
            },
            mountpoint: "/var/lib/docker/overlay2/x/merged".into(),
            dev: Dev::new(0, 39),
            runtime: "docker",
            upperdir: None,
            layers: vec![
                LayerInfo {
                    index: 1,
                    init: true,
                    ..Default::default()
                },
                LayerInfo {
                    index: 2,
                    position: Some(2),
                    diff_id: Some(format!("sha256:{}", "cd".repeat(32))),
                    size: Some(11),
                    created_by: Some(
                        "/bin/sh -c #(nop) COPY file:8a0dcac8c05d3fce4e448fe2cc2458c5ec2bb6ab2d62dc341ae634b03bfab586 in /etc/app.conf "
                            .into(),
                    ),
                    ..Default::default()
                },
                LayerInfo {
                    index: 3,
                    position: Some(1),
                    size: Some(2 << 20),
                    created_by: Some(String::new()),
                    comment: Some("imported".into()),
                    ..Default::default()
                },
            ],
            pod: None,
            mount_id: 1,
        };
        let mut c = c;
        crate::catalog::number_layers(&mut c.layers);
        let t = table(&[c], &[]);
        assert!(t.contains("CONTAINER web\\n1 (c80a5fd00c1b)"), "{t}");
        assert!(t.contains("shop/api:2.3 (abababababab)"), "{t}");
        assert!(t.contains("dev 0:39"), "{t}");
        let squeezed: Vec<String> = t
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert!(
            squeezed.contains(
                &"1/2 cdcdcdcdcdcd 11 B COPY file:8a0dcac8c05d… in /etc/app.conf".to_string()
            ),
            "{t}"
        );
        assert!(
            t.contains("(no history: imported or squashed layer); comment: imported"),
            "{t}"
        );
        assert!(
            squeezed.contains(
                &"init layer - - (init layer: /etc/hosts, /etc/resolv.conf, ...)".to_string()
            ),
            "{t}"
        );
        assert!(
            squeezed
                .iter()
                .any(|l| l.starts_with("2/2 - 2.0 MiB (no history")),
            "{t}"
        );
        assert!(
            squeezed.contains(&"rw - (container read-write layer)".to_string()),
            "{t}"
        );
    }

    /// The same image layer has one number in `layers`, the terminal and
    /// HTML reports and the JSON: its place in `docker history` order, of
    /// the image layers only, with its short diff-id.
    #[test]
    fn layer_numbers_agree_across_outputs() {
        use crate::render::{html, terminal};
        let r = crate::report::fixtures::golden_report();
        let c = &r.containers[0];
        let info = ContainerInfo {
            id: c.id.clone(),
            name: c.name.clone(),
            image: c.image.clone(),
            mountpoint: c.mountpoint.clone().into(),
            dev: Dev::new(0, 50),
            runtime: "docker",
            upperdir: None,
            layers: c.layers.clone(),
            pod: None,
            mount_id: 1,
        };
        let squeezed: Vec<String> = table(&[info], &[])
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert!(
            squeezed.iter().any(|l| l.starts_with("1/2 ab12cd34ef56 ")),
            "{squeezed:?}"
        );
        assert!(
            squeezed.iter().any(|l| l.starts_with("2/2 0123456789ab ")),
            "{squeezed:?}"
        );
        assert!(
            squeezed.iter().any(|l| l.starts_with("init layer ")
                && l.ends_with("(init layer: /etc/hosts, /etc/resolv.conf, ...)")),
            "{squeezed:?}"
        );
        // The terminal report: the hot spot and the source-layer table.
        let text = terminal::render(&r);
        let row = text
            .lines()
            .find(|l| l.contains("/var/lib/app/catalog.db"))
            .unwrap();
        assert!(row.contains(" 1/2 ab12cd34ef56 "), "{row}");
        assert!(
            text.lines()
                .any(|l| l.starts_with(" 1/2 ab12cd34ef56  COPY")),
            "{text}"
        );
        assert!(text.contains(" 2/2 0123456789ab "), "{text}");
        // HTML.
        let page = html::render(&r);
        assert!(page.contains("<code>1/2 ab12cd34ef56</code>"));
        assert!(page.contains(">1/2 ab12cd34ef56</code>"));
        // JSON: the file's source layer, numbered 1 of the image's 2.
        let v: serde_json::Value =
            serde_json::from_str(&crate::report::json::to_string(&r).unwrap()).unwrap();
        let file = v["copy_ups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == "var/lib/app/catalog.db")
            .unwrap();
        let index = file["layer"]["index"].as_u64().unwrap() as usize;
        let layers = v["containers"][0]["layers"].as_array().unwrap();
        let layer = &layers[index - 1];
        assert_eq!(layer["number"], 1);
        assert_eq!(layer["diff_id"], "sha256:ab12cd34ef56aa");
        assert_eq!(layers.iter().filter(|l| l["init"] == false).count(), 2);
        assert!(layers[0].get("number").is_none() && layers[0]["init"] == true);
    }
}
