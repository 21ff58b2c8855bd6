//! The harness's Docker plumbing: an image saved on the host is loaded in the
//! VM and a container runs from it (on overlay2), writing to a lower-layer
//! file (a copy-up).

use ovltrace_tests::{host_docker, require_or_skip, require_or_skip_with, vm};

#[test]
fn image_from_host_runs_in_vm() {
    if !require_or_skip("vm") || !require_or_skip("docker") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("ovltrace-vm-docker-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("creating {}: {e}", dir.display());
    }
    let image = host_docker::busybox_image(
        "ovltrace-test/plumbing:1",
        &[("data/lower.txt", b"from the image\n")],
        &dir,
    );
    if !require_or_skip_with(
        "a Docker image built on the host",
        image.as_ref().map(|_| ()).map_err(Clone::clone),
    ) {
        return;
    }
    let Ok(image) = image else { return };

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
