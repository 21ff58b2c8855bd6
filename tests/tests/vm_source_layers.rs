//! The source layer of each copy-up as the kernel knows it, and overlays
//! that reuse a device number, on real Debian kernels.
//!
//! 1. `layers-MODE`: one overlay with `lowerdir=l1:l2:l3` (index 1 = l1, the
//!    topmost lower layer). l2 was made as the upper layer of a preparatory
//!    overlay over l3, so it holds what only overlayfs itself can resolve: a
//!    directory renamed under `redirect_dir=on` (its files still live under
//!    the old name in l3), a metadata-only copy (`metacopy=on`: the inode in
//!    l2, the data in l3) and an opaque directory hiding a same-named file in
//!    l3. Plus a file shadowed in all three layers and an 8-level-deep file.
//!    Looking the copied-up path up in each layer directory finds neither
//!    the redirected file (it is not at that path in any layer) nor the
//!    metacopy file's data layer; the kernel's own lower stack has both.
//! 2. `reuse-MODE`: two overlays mounted one after the other that get the
//!    same anonymous device number (the lowest free minor: A's, freed by its
//!    umount); their copy-ups and lookups must stay apart, each with its own
//!    mountpoint.
//!
//! Each scenario runs once per probe mode of [`MODES`], on fresh overlays in
//! the same boot (a file is copied up only once).

use std::collections::BTreeMap;

use ovltrace_tests::{require_or_skip, vm};
use serde_json::Value;

/// The probe modes traced, each on its own overlays in one VM boot.
const MODES: &[&str] = &["kprobe", "fentry"];

const SCRIPT: &str = r#"
set -e
# Starts `ovltrace run` for the scenario $1 with probe mode $2 and waits
# until it traces. When it cannot, prints its stderr and fails: the scenario
# is skipped, the other modes still run, and the host reports the missing
# JSON report.
start_tracer() {
    ovltrace run --probe $2 --top 50 --json /tmp/$1.json > /tmp/$1.txt 2>/tmp/$1.err &
    pid=$!
    i=0
    until grep -q '^Tracing' /tmp/$1.err; do
        i=$((i+1))
        if [ $i -ge 300 ] || ! kill -0 $pid 2>/dev/null; then
            kill $pid 2>/dev/null || true
            ovl_section err-$1 /tmp/$1.err
            return 1
        fi
        sleep 0.1
    done
}
stop_tracer() {
    kill -INT $pid
    wait $pid
    ovl_section err-$1 /tmp/$1.err
    ovl_section json-$1 /tmp/$1.json
}

layers() {
    name=layers-$1; b=/tmp/$name
    mkdir -p $b/l1 $b/l2 $b/l3 $b/up $b/work $b/prep-work $b/prep $b/merged
    # l3, the bottom layer.
    head -c 100 /dev/zero > $b/l3/shadowed
    mkdir $b/l3/olddir
    echo hello > $b/l3/olddir/file
    head -c 777 /dev/zero > $b/l3/meta
    mkdir $b/l3/opq
    echo x > $b/l3/opq/other
    head -c 333 /dev/zero > $b/l3/opq/shared
    mkdir -p $b/l3/d1/d2/d3/d4/d5/d6/d7/d8
    echo deep > $b/l3/d1/d2/d3/d4/d5/d6/d7/d8/deep.txt
    # l2: the upper layer of a preparatory overlay over l3. redirect_dir=on
    # makes the rename a directory with a trusted.overlay.redirect xattr
    # ("olddir") and a whiteout at olddir, instead of EXDEV; metacopy=on
    # makes the chown copy up the inode alone (trusted.overlay.metacopy, no
    # data blocks); rm + mkdir of a lower directory makes it opaque
    # (trusted.overlay.opaque=y).
    mount -t overlay overlay -o lowerdir=$b/l3,upperdir=$b/l2,workdir=$b/prep-work,redirect_dir=on,metacopy=on $b/prep
    mv $b/prep/olddir $b/prep/newdir
    chown 5:5 $b/prep/meta
    rm -rf $b/prep/opq
    mkdir $b/prep/opq
    head -c 444 /dev/zero > $b/prep/opq/shared
    umount $b/prep
    # What the preparatory overlay left in l2 (no getfattr in busybox): the
    # old name whited out, the new directory empty (its file is in l3 only),
    # the metacopy file without data blocks (tmpfs allocates lazily).
    [ -c $b/l2/olddir ] || { echo "l2/olddir is no whiteout"; exit 5; }
    [ -z "$(ls -A $b/l2/newdir)" ] || { echo "l2/newdir is not empty"; exit 5; }
    stat -c '%s %b' $b/l2/meta | ovl_section meta-l2-$1
    head -c 200 /dev/zero > $b/l2/shadowed
    # l1, the top lower layer.
    head -c 300 /dev/zero > $b/l1/shadowed

    # metacopy=on is needed to follow l2's metacopy file (refused otherwise)
    # and needs redirect_dir=on.
    mount -t overlay overlay -o lowerdir=$b/l1:$b/l2:$b/l3,upperdir=$b/up,workdir=$b/work,redirect_dir=on,metacopy=on $b/merged
    grep " $b/merged " /proc/self/mountinfo | cut -d' ' -f3 | ovl_section dev-$name
    # l2/opq is opaque: l3's opq/other is hidden.
    [ ! -e $b/merged/opq/other ] || { echo "opq is not opaque"; exit 5; }
    start_tracer $name $1 || return 0
    m=$b/merged
    echo x >> $m/shadowed
    echo x >> $m/newdir/file
    echo x >> $m/meta
    echo x >> $m/opq/shared
    echo x >> $m/d1/d2/d3/d4/d5/d6/d7/d8/deep.txt
    stop_tracer $name
    umount $m
}

reuse() {
    name=reuse-$1; b=/tmp/$name
    mkdir -p $b/lower $b/upA $b/workA $b/A $b/upB $b/workB $b/B
    for f in FILES_A FILES_B; do echo $f > $b/lower/$f; done
    start_tracer $name $1 || return 0

    mount -t overlay overlay -o lowerdir=$b/lower,upperdir=$b/upA,workdir=$b/workA $b/A
    devA=$(grep " $b/A " /proc/self/mountinfo | cut -d' ' -f3)
    sleep 1
    for f in FILES_A; do echo x >> $b/A/$f; done
    for n in MISSING_A; do [ ! -e $b/A/$n ]; done
    sleep 1
    umount $b/A

    mount -t overlay overlay -o lowerdir=$b/lower,upperdir=$b/upB,workdir=$b/workB $b/B
    devB=$(grep " $b/B " /proc/self/mountinfo | cut -d' ' -f3)
    sleep 1
    for f in FILES_B; do echo x >> $b/B/$f; done
    for n in MISSING_B; do [ ! -e $b/B/$n ]; done
    sleep 1
    echo $devA | ovl_section devA-$1
    echo $devB | ovl_section devB-$1
    stop_tracer $name
    umount $b/B
    [ "$devA" = "$devB" ] || { echo "B got $devB, A had $devA"; exit 4; }
}

for mode in MODES; do
    layers $mode
    reuse $mode
done
"#;

/// (path, kind, bytes, layer.index, layer.data_index) of every copy-up of the
/// `layers` scenario, parents included, sorted by path.
const LAYERS: [(&str, &str, u64, u64, Option<u64>); 15] = [
    ("d1", "dir", 0, 3, None),
    ("d1/d2", "dir", 0, 3, None),
    ("d1/d2/d3", "dir", 0, 3, None),
    ("d1/d2/d3/d4", "dir", 0, 3, None),
    ("d1/d2/d3/d4/d5", "dir", 0, 3, None),
    ("d1/d2/d3/d4/d5/d6", "dir", 0, 3, None),
    ("d1/d2/d3/d4/d5/d6/d7", "dir", 0, 3, None),
    ("d1/d2/d3/d4/d5/d6/d7/d8", "dir", 0, 3, None),
    ("d1/d2/d3/d4/d5/d6/d7/d8/deep.txt", "regular", 5, 3, None),
    // The metacopy inode is l2's; its data, and so the bytes, l3's.
    ("meta", "regular", 777, 2, Some(3)),
    // The renamed directory itself is l2's (merged with l3's olddir through
    // the redirect); the file in it exists only in l3, under olddir/.
    ("newdir", "dir", 0, 2, None),
    ("newdir/file", "regular", 6, 3, None),
    // Opaque in l2: l3's opq/shared (333 bytes) is not the source.
    ("opq", "dir", 0, 2, None),
    ("opq/shared", "regular", 444, 2, None),
    // 300 bytes in l1, 200 in l2, 100 in l3.
    ("shadowed", "regular", 300, 1, None),
];

/// The `reuse` scenario: files copied up and distinct missing names looked
/// up (once each) in overlay A, then in overlay B on the same device. The
/// counts differ so that swapped or merged entries show.
const FILES_A: &[&str] = &["f1", "f2"];
const MISSING_A: &[&str] = &["missA1", "missA2", "missA3"];
const FILES_B: &[&str] = &["f3", "f4", "f5", "f6"];
const MISSING_B: &[&str] = &["missB1", "missB2", "missB3", "missB4", "missB5"];

fn script() -> String {
    SCRIPT
        .replace("MODES", &MODES.join(" "))
        .replace("FILES_A", &FILES_A.join(" "))
        .replace("FILES_B", &FILES_B.join(" "))
        .replace("MISSING_A", &MISSING_A.join(" "))
        .replace("MISSING_B", &MISSING_B.join(" "))
}

/// Collects every mismatch of one report, so that a failure lists them all
/// (with the JSON), of every scenario, instead of only the first.
struct Checks<'a> {
    scenario: &'a str,
    json: &'a str,
    failures: Vec<String>,
}

impl<'a> Checks<'a> {
    fn new(scenario: &'a str, json: &'a str) -> Self {
        Self {
            scenario,
            json,
            failures: Vec::new(),
        }
    }

    fn eq(&mut self, what: impl AsRef<str>, got: &Value, want: impl Into<Value>) {
        let want = want.into();
        if *got != want {
            self.failures
                .push(format!("{}: got {got}, expected {want}", what.as_ref()));
        }
    }

    fn fail(&mut self, msg: String) {
        self.failures.push(msg);
    }

    /// The failure message, if anything failed.
    fn finish(self) -> Option<String> {
        (!self.failures.is_empty()).then(|| {
            format!(
                "{}: {} failed check(s):\n  {}\n---- JSON report of {}:\n{}",
                self.scenario,
                self.failures.len(),
                self.failures.join("\n  "),
                self.scenario,
                self.json
            )
        })
    }
}

/// The JSON report of scenario `name`, or the failure message (with
/// ovltrace's stderr) when the tracer did not run.
fn report(out: &vm::VmOutput, name: &str) -> Result<(String, Value), String> {
    let Some(json) = out.section(&format!("json-{name}")) else {
        return Err(format!(
            "{name}: no JSON report; ovltrace's stderr:\n{}",
            out.section(&format!("err-{name}")).unwrap_or_default()
        ));
    };
    match serde_json::from_str(&json) {
        Ok(r) => Ok((json, r)),
        Err(e) => Err(format!("{name}: bad JSON ({e}):\n{json}")),
    }
}

fn section(out: &vm::VmOutput, name: &str) -> String {
    out.section(name)
        .unwrap_or_else(|| panic!("no section {name}\n{}", out.dump()))
        .trim()
        .to_string()
}

/// Checks shared by both scenarios: probe mode, nothing lost.
fn check_run(c: &mut Checks, r: &Value, mode: &str) {
    c.eq("probe.strategy", &r["probe"]["strategy"], mode);
    c.eq("drops.total", &r["drops"]["total"], 0);
}

fn check_layers(out: &vm::VmOutput, mode: &str) -> Option<String> {
    let name = format!("layers-{mode}");
    // Size and blocks of l2/meta: metadata only.
    assert_eq!(section(out, &format!("meta-l2-{mode}")), "777 0");
    let (json, r) = match report(out, &name) {
        Ok(report) => report,
        Err(e) => return Some(e),
    };
    let mut c = Checks::new(&name, &json);
    check_run(&mut c, &r, mode);
    let mountpoint = format!("/tmp/{name}/merged");
    let dev = section(out, &format!("dev-{name}"));

    let files: BTreeMap<&str, &Value> = r["copy_ups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["mountpoint"] == mountpoint.as_str())
        .map(|f| (f["path"].as_str().unwrap(), f))
        .collect();
    let paths: Vec<&str> = files.keys().copied().collect();
    let expected: Vec<&str> = LAYERS.iter().map(|e| e.0).collect();
    c.eq("copied-up paths", &paths.into(), expected);
    for (path, kind, bytes, index, data_index) in LAYERS {
        let Some(f) = files.get(path) else {
            continue;
        };
        c.eq(format!("{path}: kind"), &f["kind"], kind);
        c.eq(format!("{path}: bytes"), &f["bytes"], bytes);
        c.eq(format!("{path}: count"), &f["count"], 1);
        c.eq(format!("{path}: errors"), &f["errors"], 0);
        c.eq(format!("{path}: dev"), &f["dev"], dev.as_str());
        c.eq(format!("{path}: layer.index"), &f["layer"]["index"], index);
        // Absent (not null) unless the data is in another layer.
        let got = f["layer"].get("data_index").cloned();
        if got != data_index.map(Value::from) {
            c.fail(format!(
                "{path}: layer.data_index: got {}, expected {}",
                got.map_or("(absent)".into(), |v| v.to_string()),
                data_index.map_or("(absent)".into(), |v| v.to_string())
            ));
        }
    }
    let mount = r["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountpoint"] == mountpoint.as_str());
    match mount {
        Some(m) => {
            c.eq("mount dev", &m["dev"], dev.as_str());
            c.eq("mount copy_up.count", &m["copy_up"]["count"], LAYERS.len());
            let bytes: u64 = LAYERS.iter().map(|e| e.2).sum();
            c.eq("mount copy_up.bytes", &m["copy_up"]["bytes"], bytes);
        }
        None => c.fail(format!("{mountpoint} not in mounts")),
    }
    c.finish()
}

fn check_reuse(out: &vm::VmOutput, mode: &str) -> Option<String> {
    let name = format!("reuse-{mode}");
    let (json, r) = match report(out, &name) {
        Ok(report) => report,
        Err(e) => return Some(e),
    };
    let dev = section(out, &format!("devA-{mode}"));
    // The script fails unless B got A's device number; printed for the record.
    assert_eq!(dev, section(out, &format!("devB-{mode}")));
    let mut c = Checks::new(&name, &json);
    check_run(&mut c, &r, mode);
    let mp_a = format!("/tmp/{name}/A");
    let mp_b = format!("/tmp/{name}/B");
    let overlays = [
        (&mp_a, "upA", FILES_A, MISSING_A),
        (&mp_b, "upB", FILES_B, MISSING_B),
    ];

    // One entry per mount, both with the shared device.
    for key in ["mounts", "lookups"] {
        let mut mps: Vec<&str> = r[key]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["dev"] == dev.as_str())
            .map(|m| m["mountpoint"].as_str().unwrap_or("(null)"))
            .collect();
        mps.sort();
        c.eq(
            format!("{key}: mountpoints of dev {dev}"),
            &mps.into(),
            vec![mp_a.as_str(), mp_b.as_str()],
        );
    }
    let entry = |key: &str, mp: &str| {
        r[key]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["dev"] == dev.as_str() && m["mountpoint"] == mp)
    };
    for (mp, upper, files, missing) in overlays {
        if let Some(m) = entry("mounts", mp) {
            c.eq(
                format!("mounts[{mp}].upperdir"),
                &m["upperdir"],
                format!("/tmp/{name}/{upper}"),
            );
            c.eq(
                format!("mounts[{mp}].copy_up.count"),
                &m["copy_up"]["count"],
                files.len(),
            );
        }
        if let Some(l) = entry("lookups", mp) {
            // One ovl_lookup per name: each copied-up file once (found),
            // each missing name once (the negative dentry is cached).
            c.eq(
                format!("lookups[{mp}].not_found"),
                &l["not_found"],
                missing.len(),
            );
            c.eq(format!("lookups[{mp}].found"), &l["found"], files.len());
        }
    }

    // Every file tied to the overlay it was copied up in.
    let mut got: Vec<(String, String)> = r["copy_ups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            c.eq(format!("{}: dev", f["path"]), &f["dev"], dev.as_str());
            c.eq(format!("{}: count", f["path"]), &f["count"], 1);
            c.eq(
                format!("{}: layer.index", f["path"]),
                &f["layer"]["index"],
                1,
            );
            (
                f["path"].as_str().unwrap_or_default().to_string(),
                f["mountpoint"].as_str().unwrap_or("(null)").to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = overlays
        .iter()
        .flat_map(|(mp, _, files, _)| files.iter().map(|f| (f.to_string(), mp.to_string())))
        .collect();
    want.sort();
    if got != want {
        c.fail(format!(
            "copy_ups (path, mountpoint): got {got:?}, expected {want:?}"
        ));
    }
    c.finish()
}

fn source_layers(kernel: &str) {
    if !require_or_skip("vm") {
        return;
    }
    let out = vm::run(kernel, &vm::VmOpts::default(), &script());
    out.assert_exit(0);
    let failures: Vec<String> = MODES
        .iter()
        .flat_map(|mode| [check_layers(&out, mode), check_reuse(&out, mode)])
        .flatten()
        .collect();
    if !failures.is_empty() {
        // The summary lines first, then each report.
        let summary: Vec<&str> = failures
            .iter()
            .flat_map(|f| f.lines().take_while(|l| !l.starts_with("---- JSON")))
            .collect();
        panic!(
            "on {kernel}:\n{}\n\n{}",
            summary.join("\n"),
            failures.join("\n")
        );
    }
}

#[test]
fn source_layers_6_1() {
    source_layers("6.1");
}

#[test]
fn source_layers_6_12() {
    source_layers("6.12");
}
