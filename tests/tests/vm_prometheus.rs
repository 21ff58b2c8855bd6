//! Prometheus output of a live trace on a real kernel (6.12): `ovltrace run
//! --prometheus 127.0.0.1:9435 --textfile /tmp/tf` while a known number of
//! files are copied up. Inside the VM, `/metrics` is scraped with busybox
//! wget and `promtool check metrics` (the host's, copied in) checks the
//! scrape and both textfiles (during the trace and after it); on the host,
//! the copy-up counters must equal the copy-ups triggered.

use ovltrace_tests::{require_or_skip, require_or_skip_with, vm};

/// Files copied up by the workload.
const COPY_UPS: usize = 25;

const SCRIPT: &str = r#"
set -e
ip link set lo up
N=@COPY_UPS@
base=/tmp/p
mkdir -p $base/lower $base/up $base/work $base/merged /tmp/tf
i=0
while [ $i -lt $N ]; do i=$((i+1)); echo $i > $base/lower/f$i; done
mount -t overlay overlay -o lowerdir=$base/lower,upperdir=$base/up,workdir=$base/work $base/merged

ovl_trace /tmp/out.txt /tmp/err.txt --prometheus 127.0.0.1:9435 --textfile /tmp/tf

# A second tracer cannot have the port: one line, before tracing.
set +e
ovltrace run --prometheus 9435 > /dev/null 2> /tmp/bind.err
echo "rc=$?" >> /tmp/bind.err
set -e
ovl_section bind /tmp/bind.err

# Before the workload.
wget -q -O /tmp/before.prom http://127.0.0.1:9435/metrics
ovl_section before /tmp/before.prom
cd $base/merged
i=0
while [ $i -lt $N ]; do i=$((i+1)); echo x >> f$i; done
cd /
# Events reach the tracer asynchronously: scrape until all are counted.
want="ovltrace_copy_ups_total{container=\"\",image=\"\"} $N"
i=0
while :; do
    wget -S -q -O /tmp/scrape.prom http://127.0.0.1:9435/metrics 2> /tmp/headers.txt || true
    grep -qxF "$want" /tmp/scrape.prom && break
    i=$((i+1)); [ $i -lt 100 ] || break
    sleep 0.2
done
ovl_section headers /tmp/headers.txt
ovl_section scrape /tmp/scrape.prom
set +e
/usr/bin/promtool check metrics < /tmp/scrape.prom > /tmp/check.txt 2>&1
echo "rc=$?" >> /tmp/check.txt
ovl_section check-scrape /tmp/check.txt
wget -q -O - http://127.0.0.1:9435/ > /tmp/404.txt 2>&1
echo "rc=$?" >> /tmp/404.txt
ovl_section not-found /tmp/404.txt
# The textfile written while the trace runs (at its start).
cp /tmp/tf/ovltrace.prom /tmp/textfile-live.prom
/usr/bin/promtool check metrics < /tmp/textfile-live.prom > /tmp/check.txt 2>&1
echo "rc=$?" >> /tmp/check.txt
ovl_section check-textfile-live /tmp/check.txt
ovl_section textfile-live /tmp/textfile-live.prom
set -e

kill -INT $pid
wait $pid
ovl_section stderr /tmp/err.txt
ovl_section textfile /tmp/tf/ovltrace.prom
set +e
/usr/bin/promtool check metrics < /tmp/tf/ovltrace.prom > /tmp/check.txt 2>&1
echo "rc=$?" >> /tmp/check.txt
ovl_section check-textfile /tmp/check.txt
ls -A /tmp/tf | ovl_section textfile-dir
"#;

/// The value of the sample whose name and labels are exactly `series`.
fn value(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_string)
}

#[test]
fn prometheus_6_12() {
    if !require_or_skip("vm") {
        return;
    }
    let promtool = "/usr/bin/promtool";
    let found = if std::path::Path::new(promtool).is_file() {
        Ok(())
    } else {
        Err(format!("{promtool} missing (package prometheus)"))
    };
    if !require_or_skip_with("promtool", found) {
        return;
    }
    let opts = vm::VmOpts::default().include(promtool, promtool);
    let script = SCRIPT.replace("@COPY_UPS@", &COPY_UPS.to_string());
    let out = vm::run("6.12", &opts, &script);
    out.assert_exit(0);
    let section = |name: &str| {
        out.section(name)
            .unwrap_or_else(|| panic!("no section {name}\n{}", out.dump()))
    };
    let n = COPY_UPS.to_string();
    let none = r#"container="",image="""#;

    // Port in use: one clear line, and no tracing.
    let bind = section("bind");
    assert!(
        bind.starts_with("ovltrace: error: --prometheus: cannot listen on 127.0.0.1:9435: "),
        "{bind}"
    );
    assert_eq!(bind.lines().count(), 2, "{bind}");
    assert!(bind.ends_with("rc=1\n"), "{bind}");

    // Nothing copied up before the workload; then exactly what it did.
    let before = section("before");
    assert_eq!(
        value(&before, &format!("ovltrace_copy_ups_total{{{none}}}")).as_deref(),
        Some("0"),
        "{before}"
    );

    // The live scrape: the right content type, valid, and exact.
    let headers = section("headers");
    assert!(headers.contains("HTTP/1.1 200 OK"), "{headers}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{headers}"
    );
    assert_eq!(section("check-scrape"), "rc=0\n", "promtool on the scrape");
    let scrape = section("scrape");
    let get = |text: &str, series: &str| {
        value(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert_eq!(
        get(&scrape, &format!("ovltrace_copy_ups_total{{{none}}}")),
        n,
        "{scrape}"
    );
    assert_eq!(
        get(
            &scrape,
            &format!("ovltrace_copy_up_seconds_count{{{none}}}")
        ),
        n
    );
    assert_eq!(
        get(
            &scrape,
            &format!("ovltrace_copy_up_seconds_bucket{{{none},le=\"+Inf\"}}")
        ),
        n
    );
    // Each file holds "<i>\n": 2 bytes for 1..=9, 3 bytes for 10..=99.
    let bytes: usize = (1..=COPY_UPS).map(|i| i.to_string().len() + 1).sum();
    assert_eq!(
        get(&scrape, &format!("ovltrace_copy_up_bytes_total{{{none}}}")),
        bytes.to_string()
    );
    assert_eq!(
        get(
            &scrape,
            r#"ovltrace_dropped_events_total{reason="ringbuf_full"}"#
        ),
        "0"
    );
    assert!(
        scrape.contains(r#"ovltrace_build_info{version=""#)
            && scrape.contains(r#"strategy="fentry",kernel="6.12."#),
        "{scrape}"
    );
    let found: u64 = get(
        &scrape,
        &format!("ovltrace_lookups_total{{{none},result=\"found\"}}"),
    )
    .parse()
    .unwrap();
    assert!(found >= COPY_UPS as u64, "{scrape}");
    let section_404 = section("not-found");
    assert!(section_404.contains("404"), "{section_404}");

    // The textfile while tracing (written at the start) and at the end.
    assert_eq!(
        section("check-textfile-live"),
        "rc=0\n",
        "promtool on the live textfile"
    );
    assert!(section("textfile-live").contains("# TYPE ovltrace_copy_ups_total counter"));
    assert_eq!(
        section("check-textfile"),
        "rc=0\n",
        "promtool on the final textfile"
    );
    let textfile = section("textfile");
    assert_eq!(
        get(&textfile, &format!("ovltrace_copy_ups_total{{{none}}}")),
        n,
        "{textfile}"
    );
    // No temporary file is left next to it.
    assert_eq!(section("textfile-dir"), "ovltrace.prom\n");
    let stderr = section("stderr");
    assert!(
        stderr.contains("Serving Prometheus metrics on http://127.0.0.1:9435/metrics"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Prometheus metrics written to /tmp/tf/ovltrace.prom"),
        "{stderr}"
    );
}
