//! `--container NAME` for a container that starts after the trace: ovltrace
//! notes that it waits for it, and the classic case, an entrypoint
//! `chown -R` right at container start, is caught whole and attributed to
//! it. Another container's copy-ups (started first, same image) are not
//! counted.

use std::collections::BTreeMap;

use ovltrace_tests::{attribution, host_docker, require_or_skip, require_or_skip_with, vm};
use serde_json::Value;

const IMAGE: &str = "ovltrace-test/late:1";

const SCRIPT: &str = r#"
IMG=ovltrace-test/late:1
ovl_trace /tmp/r.txt /tmp/r.err --container late --top 200 --json /tmp/r.json
docker run --network none --name other $IMG sh -c 'echo x >> /data/a.txt' || exit 4
docker run --network none --name late $IMG chown -R 1:1 /data || exit 5
docker inspect --format '{{.Name}} {{.Id}}' late other | ovl_section ids
kill -INT $pid
wait $pid
echo $? | ovl_section rc
ovl_section report /tmp/r.txt
ovl_section stderr /tmp/r.err
ovl_section json /tmp/r.json
"#;

/// What `chown -R /data` copies up in `late`: every directory and file
/// under /data, once each.
const CHOWNED: [&str; 6] = [
    "data",
    "data/a.txt",
    "data/b.txt",
    "data/c.txt",
    "data/sub",
    "data/sub/d.txt",
];

#[test]
fn a_container_started_after_the_trace_is_traced_6_12() {
    if !require_or_skip("vm") || !require_or_skip("docker") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ovltrace-vm-late-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("creating {}: {e}", dir.display());
    }
    let image = host_docker::busybox_image(
        IMAGE,
        &[
            ("data/a.txt", b"a\n"),
            ("data/b.txt", b"bb\n"),
            ("data/c.txt", b"ccc\n"),
            ("data/sub/d.txt", b"dddd\n"),
        ],
        &dir,
    );
    if !require_or_skip_with(
        "a Docker image built on the host",
        image.as_ref().map(|_| ()).map_err(Clone::clone),
    ) {
        return;
    }
    let Ok(image) = image else { return };
    let out = vm::run(
        "6.12",
        &vm::VmOpts::default()
            .with_docker()
            .docker_image(&image)
            .timeout(900),
        SCRIPT,
    );
    let _ = std::fs::remove_dir_all(&dir);
    out.assert_exit(0);
    let dump = || out.dump();
    let section = |name: &str| {
        out.section(name)
            .unwrap_or_else(|| panic!("no section {name}\n{}", dump()))
    };
    assert_eq!(section("rc").trim(), "0", "{}", dump());
    let ids = attribution::parse_ids(&section("ids"));
    let late = ids.get("late").unwrap_or_else(|| panic!("ids: {ids:?}"));
    let other = ids.get("other").unwrap_or_else(|| panic!("ids: {ids:?}"));

    // The name was waited for, and said so.
    let stderr = section("stderr");
    assert!(
        stderr.lines().next().is_some_and(|l| l.starts_with(
            "ovltrace: waiting for container \"late\": no running container has this name"
        )),
        "{stderr}"
    );

    let r: Value = serde_json::from_str(&section("json")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r["drops"]["total"], 0, "{r:#}");
    assert_eq!(r["filters"]["containers"], serde_json::json!(["late"]));
    assert!(
        r["filters"].get("containers_in_kernel").is_none(),
        "a waited-for name is filtered in user space: {r:#}"
    );
    let files = r["copy_ups"].as_array().unwrap();
    // Every copy-up counted is late's; none is other's.
    for f in files {
        assert_eq!(f["container"].as_str(), Some(late.as_str()), "{f:#}");
    }
    // The entrypoint's chown -R, whole: the container's own copy-ups.
    let own: BTreeMap<&str, &Value> = files
        .iter()
        .filter(|f| f["outside"] != true)
        .map(|f| (f["path"].as_str().unwrap(), f))
        .collect();
    assert_eq!(own.keys().copied().collect::<Vec<_>>(), CHOWNED, "{r:#}");
    for (path, f) in &own {
        assert_eq!(f["count"], 1, "{path}");
        assert_eq!(f["comms"], serde_json::json!(["chown"]), "{path}");
    }
    let sizes = [
        ("data/a.txt", 2),
        ("data/b.txt", 3),
        ("data/c.txt", 4),
        ("data/sub/d.txt", 5),
    ];
    for (path, bytes) in sizes {
        assert_eq!(own[path]["bytes"], bytes, "{path}");
    }
    let container = |id: &str| {
        r["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let late_c = container(late);
    assert_eq!(late_c["name"], "late", "{r:#}");
    assert_eq!(
        late_c["copy_up"]["count"].as_u64().unwrap(),
        files
            .iter()
            .map(|f| f["count"].as_u64().unwrap())
            .sum::<u64>(),
        "the container's total is its files': {r:#}"
    );
    // other's copy-ups (data, data/a.txt, and dockerd's for it) were seen
    // and dropped in user space.
    let other_c = container(other);
    assert!(
        other_c.is_null() || other_c["copy_up"]["count"] == 0,
        "{other_c:#}"
    );
    assert!(
        r["counters"]["filtered_user"].as_u64().unwrap() >= 2,
        "{r:#}"
    );
    let report = section("report");
    assert!(
        report.starts_with("Filters: only container late"),
        "{report}"
    );
}
