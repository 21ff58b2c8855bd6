//! Layer attribution with a real standalone containerd (overlayfs
//! snapshotter) on Debian's 6.12 kernel.
//!
//! The attribution image (`docker save` of tests/src/images.rs, built offline
//! on the host) is imported with `ctr images import`; two containers started
//! with `ctr run` (web-1 with Kubernetes pod labels) append to files from
//! different layers through `ctr task exec` while `ovltrace run --json`
//! traces. Every copy-up must name its container and the source layer's
//! index, diff-id and instruction exactly as the image describes them (no
//! init layer: index 1 is the image's top layer), with the exact bytes; each
//! container its image digest (`ctr images ls`), runtime and pod.

use ovltrace_tests::{
    attribution::{self, Runtime, START_TRACING, STOP_TRACING, WORKLOAD_1, WORKLOAD_2},
    images, require, require_or_skip, vm,
};

fn script() -> String {
    format!(
        r#"
ctr images import /host/attrib.tar > /tmp/import.txt 2>&1 || {{ cat /tmp/import.txt >&2; exit 2; }}
IMG=docker.io/ovltrace-test/attrib:1
{START_TRACING}
# An initramfs root cannot pivot_root.
ctr run -d --no-pivot --label io.kubernetes.pod.name=shop-api-1 \
    --label io.kubernetes.pod.namespace=shop $IMG web-1 sleep 600 || exit 4
ctr run -d --no-pivot $IMG web-2 sleep 600 || exit 5
ctr task exec --exec-id w1 web-1 sh -c '{WORKLOAD_1}' || exit 6
ctr task exec --exec-id w2 web-2 sh -c '{WORKLOAD_2}' || exit 7
printf 'web-1 web-1\nweb-2 web-2\n' | ovl_section containers
ctr images ls | awk -v img=$IMG '$1 == img {{ print $3 }}' | ovl_section image
{STOP_TRACING}
ctr task kill -s KILL web-1; ctr task kill -s KILL web-2
"#
    )
}

#[test]
fn containerd_attribution_6_12() {
    if !require_or_skip("vm") || !require_or_skip("docker") {
        return;
    }
    if !require_or_skip("containerd") {
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
            .with_containerd()
            .include(&img.tar, "/host/attrib.tar")
            .timeout(900),
        &script(),
    );
    out.assert_exit(0);
    let rt = Runtime {
        name: "containerd",
        ids: attribution::parse_ids(&out.section("containers").unwrap_or_default()),
        image_id: out.section("image").unwrap_or_default().trim().to_string(),
        tags: vec!["docker.io/ovltrace-test/attrib:1".into()],
        pod: Some(("shop-api-1", "shop")),
    };
    assert!(rt.image_id.starts_with("sha256:"), "{}", out.dump());
    attribution::check(&out, &img, &rt);
}
