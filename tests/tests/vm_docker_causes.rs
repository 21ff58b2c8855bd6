//! Causes and the advice keyed to them with a real dockerd (6.12): an image
//! built on the host by the legacy builder, on the attribution image's
//! busybox image, with three instructions whose files a container then
//! changes at start, the way the demo's shop-worker does:
//! - `RUN ... /srv/static/f$i` (25 files): the entrypoint runs `chown -R`
//!   over them: a metadata storm, advice "do it at build time" naming that
//!   instruction;
//! - `RUN ... dd ... of=/var/lib/app/catalog.db` (5 MiB): an append copies
//!   it up whole: advice "a volume for that path";
//! - `RUN ... /var/lib/dpkg/status ... /opt/dpkg`: a script named dpkg
//!   writes to the status file: advice "move that step into the image
//!   build".

use std::{collections::BTreeMap, process::Command};

use ovltrace_tests::{
    attribution::{START_TRACING, STOP_TRACING},
    host_docker, images, require, require_or_skip, vm,
};
use serde_json::Value;

const TAG: &str = "ovltrace-test/causes:1";

fn script() -> String {
    format!(
        r#"
IMG=ovltrace-test/causes:1
{START_TRACING}
docker run --network none --name shop-worker $IMG sh -c '
    chown -R 1:1 /srv/static
    echo x >> /var/lib/app/catalog.db
    /opt/dpkg' || exit 4
docker inspect --format '{{{{.Id}}}}' shop-worker | ovl_section id
{STOP_TRACING}
"#
    )
}

/// Builds TAG on the attribution image's base and saves it.
fn build_image(dir: &std::path::Path) -> Result<std::path::PathBuf, String> {
    // The attribution image is loaded in the host's daemon by this call.
    let base_tag = images::attribution_image()?.tag;
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).map_err(|e| format!("creating {}: {e}", ctx.display()))?;
    let dockerfile = format!(
        "FROM {base_tag}\n\
         RUN mkdir -p /srv/static && for i in $(seq 1 25); do echo $i > /srv/static/f$i; done\n\
         RUN mkdir -p /var/lib/app && dd if=/dev/zero of=/var/lib/app/catalog.db bs=1048576 count=5\n\
         RUN mkdir -p /var/lib/dpkg /opt && echo ok > /var/lib/dpkg/status && \
         printf '#!/bin/sh\\necho installed >> /var/lib/dpkg/status\\n' > /opt/dpkg && chmod 755 /opt/dpkg\n"
    );
    std::fs::write(ctx.join("Dockerfile"), dockerfile).map_err(|e| format!("Dockerfile: {e}"))?;
    let out = Command::new(host_docker::DOCKER)
        .args(["build", "-q", "-t", TAG])
        .arg(&ctx)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .map_err(|e| format!("docker build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker build: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let tar = dir.join("causes.tar");
    host_docker::docker(&["save", "-o", tar.to_str().unwrap(), TAG])?;
    Ok(tar)
}

#[test]
fn causes_and_advice_in_docker() {
    if !require_or_skip("vm") || !require_or_skip("docker") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ovltrace-vm-causes-{}", std::process::id()));
    let Some(image) = require("the causes image built on the host", build_image(&dir)) else {
        return;
    };
    let out = vm::run(
        "6.12",
        &vm::VmOpts::default().docker_image(&image).timeout(900),
        &script(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    out.assert_exit(0);
    let json = out.section("json").unwrap_or_default();
    let r: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("bad JSON ({e}): {json}"));
    let id = out.section("id").unwrap_or_default().trim().to_string();

    let files: BTreeMap<String, &Value> = r["copy_ups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["container"] == id.as_str())
        .map(|f| (f["path"].as_str().unwrap().to_string(), f))
        .collect();
    let cause = |p: &str| {
        files
            .get(p)
            .map(|f| f["causes"].to_string())
            .unwrap_or_else(|| panic!("{p} not copied up: {json}"))
    };
    for i in 1..=25 {
        assert_eq!(cause(&format!("srv/static/f{i}")), r#"["metadata"]"#);
    }
    assert_eq!(cause("srv"), r#"["parent"]"#);
    assert_eq!(cause("var/lib/app/catalog.db"), r#"["write"]"#);
    assert_eq!(cause("var/lib/dpkg/status"), r#"["write"]"#);
    assert_eq!(
        files["var/lib/dpkg/status"]["comms"],
        serde_json::json!(["dpkg"])
    );

    let advice = r["advice"].as_array().unwrap();
    let find = |kind: &str, target: &str| {
        advice
            .iter()
            .find(|a| a["kind"] == kind && a["target"] == target)
            .unwrap_or_else(|| panic!("no {kind} advice for {target}: {json}"))
    };
    let storm = find("build", "/srv/static");
    assert_eq!(storm["cause"], "metadata");
    assert!(storm["numbers"]["files"].as_u64().unwrap() >= 25, "{storm}");
    assert!(
        storm["instruction"]
            .as_str()
            .unwrap()
            .contains("/srv/static/f$i"),
        "{storm}"
    );
    let msg = storm["message"].as_str().unwrap();
    assert!(
        msg.contains("COPY --chown") && msg.contains("RUN mkdir -p /srv/static"),
        "{msg}"
    );
    let big = find("volume", "/var/lib/app/catalog.db");
    assert_eq!(big["numbers"]["bytes"], 5 << 20);
    assert!(
        big["instruction"]
            .as_str()
            .unwrap()
            .contains("of=/var/lib/app/catalog.db"),
        "{big}"
    );
    let dpkg = advice
        .iter()
        .find(|a| a["kind"] == "build" && a["message"].as_str().unwrap().contains("dpkg wrote"))
        .unwrap_or_else(|| panic!("no package-manager advice: {json}"));
    assert!(
        dpkg["instruction"].as_str().unwrap().contains("/opt/dpkg"),
        "{dpkg}"
    );
    // No volume advice for the metadata storm any more.
    assert!(
        !advice
            .iter()
            .any(|a| a["kind"] == "volume" && a["target"] == "/srv/static"),
        "{json}"
    );
    let text = out.section("report").unwrap_or_default();
    assert!(text.contains("why: metadata"), "{text}");
    eprintln!("{text}");
}
