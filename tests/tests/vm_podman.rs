//! Layer attribution with real Podman (rootful, containers/storage overlay)
//! on Debian's 6.12 kernel.
//!
//! The attribution image (`docker save` of tests/src/images.rs, built offline
//! on the host) is loaded with `podman load`; two containers started with
//! `podman run` append to files from different layers through `podman exec`
//! while `ovltrace run --json` traces. Every copy-up must name its container
//! and the source layer's index, diff-id and instruction exactly as the image
//! describes them (no init layer: index 1 is the image's top layer), with the
//! exact bytes; each container its id and name (`podman inspect`), image id
//! (`podman image inspect`) and runtime.

use ovltrace_tests::{
    attribution::{self, Runtime, START_TRACING, STOP_TRACING, WORKLOAD_1, WORKLOAD_2},
    images, require, require_or_skip, vm,
};

fn script() -> String {
    format!(
        r#"
podman load -q -i /host/attrib.tar > /tmp/load.txt 2>&1 || {{ cat /tmp/load.txt >&2; exit 2; }}
IMG=localhost/ovltrace-test/attrib:1
{START_TRACING}
podman run -d --network none --name web-1 $IMG sleep 600 > /dev/null || exit 4
podman run -d --network none --name web-2 $IMG sleep 600 > /dev/null || exit 5
podman exec web-1 sh -c '{WORKLOAD_1}' || exit 6
podman exec web-2 sh -c '{WORKLOAD_2}' || exit 7
podman inspect --format '{{{{.Name}}}} {{{{.Id}}}}' web-1 web-2 | ovl_section containers
podman image inspect --format '{{{{.Id}}}}' $IMG | ovl_section image
{STOP_TRACING}
podman rm -f -t 0 web-1 web-2 > /dev/null
"#
    )
}

#[test]
fn podman_attribution_6_12() {
    if !require_or_skip("vm") || !require_or_skip("docker") {
        return;
    }
    if !require_or_skip("podman") {
        return;
    }
    let Some(img) = require(
        "the attribution image (built on the host)",
        images::attribution_image(),
    ) else {
        return;
    };
    let out = vm::run(
        "6.12",
        &vm::VmOpts::default()
            .with_podman()
            .include(&img.tar, "/host/attrib.tar")
            .timeout(900),
        &script(),
    );
    out.assert_exit(0);
    let rt = Runtime {
        name: "podman",
        ids: attribution::parse_ids(&out.section("containers").unwrap_or_default()),
        image_id: format!("sha256:{}", out.section("image").unwrap_or_default().trim()),
        tags: vec!["localhost/ovltrace-test/attrib:1".into()],
        pod: None,
    };
    attribution::check(&out, &img, &rt);
}
