//! The harness's Docker plumbing: an image saved on the host is loaded in the
//! VM and a container runs from it (on overlay2), writing to a lower-layer
//! file (a copy-up).

use ovltrace_tests::{host_docker, require, require_or_skip, vm};

#[test]
fn image_from_host_runs_in_vm() {
    if !require_or_skip("vm") || !require_or_skip("docker") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ovltrace-vm-docker-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("creating {}: {e}", dir.display());
    }
    let Some(image) = require(
        "a Docker image built on the host",
        host_docker::busybox_image(
            "ovltrace-test/plumbing:1",
            &[("data/lower.txt", b"from the image\n")],
            &dir,
        ),
    ) else {
        return;
    };

    let script = r#"
docker run --rm --network none ovltrace-test/plumbing:1 \
    sh -c 'echo hi; echo more >> /data/lower.txt; cat /data/lower.txt'
"#;
    let out = vm::run(
        "6.12",
        &vm::VmOpts::default().docker_image(&image).timeout(600),
        script,
    );
    let _ = std::fs::remove_dir_all(&dir);
    out.assert_exit(0);
    assert_eq!(out.stdout, "hi\nfrom the image\nmore\n", "{}", out.dump());
}
