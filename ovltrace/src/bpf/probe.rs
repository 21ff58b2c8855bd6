//! Attach strategy: fentry/fexit when the overlay functions have BTF, in
//! vmlinux (overlay built in) or in the overlay module's own BTF (overlay.ko,
//! /sys/kernel/btf/overlay), kprobe/kretprobe otherwise. The choice is made by
//! trying, not by guessing from the kernel version: a kernel can have fentry in
//! its config and still refuse it (lockdown, missing trampolines), or a function
//! can have BTF but exist only as a compiler clone (`.isra.N`) fentry cannot
//! target.

use std::{fmt, os::fd::BorrowedFd};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    programs::{FEntry, FExit, KProbe},
    Btf, Ebpf,
};

use crate::{
    sys::btf::{KernelBtf, OVERLAY_BTF},
    sys::module_btf,
};

/// Kernel functions the tracer hooks.
pub const COPY_UP_FN: &str = "ovl_copy_up_one";
pub const LOOKUP_FN: &str = "ovl_lookup";
/// Data-copy functions by preference: 6.1+ has `ovl_copy_up_file`, older
/// kernels `ovl_copy_up_data` (whose `len` moved from argument 2 to 3 in 5.8).
pub const DATA_COPY_FNS: [&str; 2] = ["ovl_copy_up_file", "ovl_copy_up_data"];
/// Functions that tell why a copy-up happens: `ovl_copy_up_flags` (target
/// dentry and open flags), `ovl_link`, `ovl_rename`. Optional: without them
/// the cause degrades (unknown; link and rename read as metadata changes).
pub const CAUSE_FNS: [&str; 3] = ["ovl_copy_up_flags", "ovl_link", "ovl_rename"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Fentry,
    Kprobe,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Fentry => "fentry",
            Strategy::Kprobe => "kprobe",
        })
    }
}

/// The symbols to attach to, as this kernel names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbols {
    pub copy_up: Option<String>,
    pub lookup: Option<String>,
    /// Data-copy function and the index of its `len` argument.
    pub data_copy: Option<(String, u32)>,
    /// [`CAUSE_FNS`] as kallsyms names them.
    pub cause: [Option<String>; 3],
}

/// Where fentry/fexit find the overlay functions' BTF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FentryBtf {
    /// overlay is built in: aya resolves the names in vmlinux BTF.
    Vmlinux,
    /// overlay is a module: the functions' type ids in its split BTF
    /// (/sys/kernel/btf/overlay), loaded against the module's BTF object.
    Module(ModuleFuncs),
    /// Neither describes them: fentry cannot be tried.
    Missing,
}

/// Type ids of the overlay functions in the overlay module's BTF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFuncs {
    pub copy_up: u32,
    pub lookup: u32,
    /// The planned data-copy function's id, when it has one.
    pub data_copy: Option<u32>,
    /// [`CAUSE_FNS`] ids, where the module's BTF has them.
    pub cause: [Option<u32>; 3],
}

/// The module whose BTF describes the overlay functions when it is not built in.
pub const OVERLAY_MODULE: &str = "overlay";

/// What `run` will try, in order, and why.
#[derive(Debug, Clone)]
pub struct Plan {
    pub order: Vec<Strategy>,
    pub symbols: Symbols,
    pub fentry_btf: FentryBtf,
    /// Human-readable reasons behind the order, shown by `doctor`.
    pub notes: Vec<String>,
}

/// Finds `name` in /proc/kallsyms text, accepting the `.isra.N`/`.constprop.N`
/// clones the compiler makes of static functions (`.part`/`.cold` fragments are
/// not whole functions and are never used).
pub fn find_symbol(kallsyms: &str, name: &str) -> Option<String> {
    let mut clone = None;
    for line in kallsyms.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_addr), Some(kind), Some(sym)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !matches!(kind, "t" | "T") {
            continue;
        }
        if sym == name {
            return Some(sym.to_string());
        }
        if let Some(rest) = sym.strip_prefix(name) {
            let is_clone = rest.starts_with(".isra.") || rest.starts_with(".constprop.");
            if is_clone && !rest.contains(".part") && !rest.contains(".cold") && clone.is_none() {
                clone = Some(sym.to_string());
            }
        }
    }
    clone
}

/// A function's name as BTF knows it: without the `.isra.N`/`.constprop.N`
/// suffix of the clone kallsyms may list.
fn btf_name(sym: &str) -> &str {
    sym.split('.').next().unwrap_or(sym)
}

/// Which attach strategy to use (`--probe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeMode {
    /// fentry/fexit where the functions have BTF (vmlinux, or the overlay
    /// module's), falling back to kprobes.
    Auto,
    Fentry,
    Kprobe,
}

pub fn plan(mode: ProbeMode, btf: Option<&KernelBtf>, kallsyms: &str) -> Plan {
    let mut notes = Vec::new();
    let copy_up = find_symbol(kallsyms, COPY_UP_FN);
    let lookup = find_symbol(kallsyms, LOOKUP_FN);
    if copy_up.is_none() || lookup.is_none() {
        notes.push(format!(
            "{COPY_UP_FN}/{LOOKUP_FN} not in /proc/kallsyms: overlay is a module that is not \
             loaded (no overlay mount yet?) — `modprobe overlay` or start a container first"
        ));
    }
    let data_copy = DATA_COPY_FNS.iter().find_map(|f| {
        let sym = find_symbol(kallsyms, f)?;
        match btf.and_then(|b| b.param_index(f, "len")) {
            Some(i) => Some((sym, i as u32)),
            None => {
                notes.push(format!(
                    "{f}: no BTF prototype, so the data-copy time is not measured"
                ));
                None
            }
        }
    });
    let fentry_btf = fentry_btf(btf, data_copy.as_ref().map(|(s, _)| btf_name(s)));
    // Where fentry would find the functions, and whether it can be tried.
    let (fentry_possible, whence) = match &fentry_btf {
        FentryBtf::Vmlinux => (
            true,
            "overlay is built in (functions in vmlinux BTF): fentry".to_string(),
        ),
        FentryBtf::Module(_) => (
            true,
            format!("overlay is a module with BTF ({OVERLAY_BTF}): fentry on the module"),
        ),
        FentryBtf::Missing if btf.is_some_and(|b| b.overlay.is_some()) => (
            false,
            format!(
                "{COPY_UP_FN}/{LOOKUP_FN} are in neither vmlinux BTF nor the overlay module's \
                 BTF ({OVERLAY_BTF})"
            ),
        ),
        FentryBtf::Missing => (
            false,
            format!(
                "overlay functions are not in vmlinux BTF and {OVERLAY_BTF} does not exist \
                 (module without BTF, or not loaded)"
            ),
        ),
    };
    // fentry resolves the plain name; a function that exists only as a clone
    // has no address under that name and fentry is refused (then: kprobe).
    for (sym, name) in [(&copy_up, COPY_UP_FN), (&lookup, LOOKUP_FN)] {
        if let Some(sym) = sym.as_deref().filter(|s| *s != name) {
            notes.push(format!(
                "{name} exists only as the compiler clone {sym}: fentry is likely refused \
                 (its BTF describes {name}, which has no address); kprobes attach to {sym}"
            ));
        }
    }
    let order = match mode {
        ProbeMode::Fentry if fentry_possible => {
            notes.push(format!("--probe fentry: {whence}, no fallback"));
            vec![Strategy::Fentry]
        }
        ProbeMode::Fentry => {
            notes.push(format!("--probe fentry: {whence}: fentry cannot work"));
            vec![Strategy::Fentry]
        }
        ProbeMode::Kprobe => vec![Strategy::Kprobe],
        ProbeMode::Auto if fentry_possible => {
            notes.push(format!("{whence}, kprobe fallback"));
            vec![Strategy::Fentry, Strategy::Kprobe]
        }
        ProbeMode::Auto => {
            notes.push(format!("{whence}: kprobe"));
            vec![Strategy::Kprobe]
        }
    };
    Plan {
        order,
        symbols: Symbols {
            copy_up,
            lookup,
            data_copy,
            cause: CAUSE_FNS.map(|f| find_symbol(kallsyms, f)),
        },
        fentry_btf,
        notes,
    }
}

/// Where the copy-up and lookup functions (and the data-copy function
/// `data_copy`, by its BTF name) are described.
fn fentry_btf(btf: Option<&KernelBtf>, data_copy: Option<&str>) -> FentryBtf {
    let Some(b) = btf else {
        return FentryBtf::Missing;
    };
    if b.vmlinux_has_func(COPY_UP_FN) && b.vmlinux_has_func(LOOKUP_FN) {
        return FentryBtf::Vmlinux;
    }
    let Some(overlay) = &b.overlay else {
        return FentryBtf::Missing;
    };
    match (
        module_btf::func_id(overlay, COPY_UP_FN),
        module_btf::func_id(overlay, LOOKUP_FN),
    ) {
        (Some(copy_up), Some(lookup)) => FentryBtf::Module(ModuleFuncs {
            copy_up,
            lookup,
            data_copy: data_copy.and_then(|f| module_btf::func_id(overlay, f)),
            cause: CAUSE_FNS.map(|f| module_btf::func_id(overlay, f)),
        }),
        _ => FentryBtf::Missing,
    }
}

/// The outcome of attaching: which strategy won and what did not work.
#[derive(Debug)]
pub struct Attached {
    pub strategy: Strategy,
    pub data_copy: Option<String>,
    pub warnings: Vec<String>,
}

/// Every strategy failed: each failure with its reason.
#[derive(Debug)]
pub struct AttachFailure {
    pub tried: Vec<(Strategy, String)>,
}

impl fmt::Display for AttachFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "no probe could be attached to the overlayfs functions:")?;
        for (s, why) in &self.tried {
            writeln!(f, "  {s}: {why}")?;
        }
        write!(f, "run `ovltrace doctor` for the details of this kernel")
    }
}

impl std::error::Error for AttachFailure {}

pub fn attach(ebpf: &mut Ebpf, plan: &Plan) -> Result<Attached, AttachFailure> {
    let mut tried = Vec::new();
    for &strategy in &plan.order {
        let result = match strategy {
            Strategy::Fentry => attach_fentry(ebpf, plan),
            Strategy::Kprobe => attach_kprobe(ebpf, &plan.symbols),
        };
        match result {
            Ok(mut attached) => {
                if let Err(e) = cache_identities(ebpf, strategy) {
                    attached.warnings.push(format!(
                        "overlay identities are read on every event (no cache): {e:#}"
                    ));
                }
                return Ok(attached);
            }
            Err(e) => {
                tried.push((strategy, format!("{e:#}")));
                unload_all(ebpf);
            }
        }
    }
    Err(AttachFailure { tried })
}

/// vmlinux function every superblock passes through when it goes away.
pub const SB_SHUTDOWN_FN: &str = "generic_shutdown_super";

/// Turns on the kernel side's cache of overlay identities, once the hook
/// that drops an entry when its superblock goes away is attached.
fn cache_identities(ebpf: &mut Ebpf, strategy: Strategy) -> Result<()> {
    match strategy {
        Strategy::Fentry => {
            let btf = Btf::from_sys_fs().context("reading vmlinux BTF")?;
            load_attach_tracing(
                ebpf,
                Target::Vmlinux(&btf),
                "fe_sb_shutdown",
                SB_SHUTDOWN_FN,
                0,
                false,
            )?;
        }
        Strategy::Kprobe => {
            let p = kprobe(ebpf, "kp_sb_shutdown")?;
            p.load().context("loading kp_sb_shutdown")?;
            p.attach(SB_SHUTDOWN_FN, 0)
                .with_context(|| format!("attaching kp_sb_shutdown to {SB_SHUTDOWN_FN}"))?;
        }
    }
    switch_on(ebpf, "CACHE_ON").context("enabling the identity cache")
}

/// Sets `[0] = 1` in the one-entry array `map`: a switch the programs read.
fn switch_on(ebpf: &mut Ebpf, map: &str) -> Result<()> {
    let m = ebpf
        .map_mut(map)
        .ok_or_else(|| anyhow!("{map} map missing from the embedded object"))?;
    let mut on: aya::maps::Array<&mut aya::maps::MapData, u32> = m.try_into()?;
    on.set(0, 1, 0)?;
    Ok(())
}

fn unload_all(ebpf: &mut Ebpf) {
    use aya::programs::Program;
    for (_, prog) in ebpf.programs_mut() {
        // Unloading also detaches; errors here mean it was never loaded.
        let _ = match prog {
            Program::KProbe(p) => p.unload(),
            Program::FEntry(p) => p.unload(),
            Program::FExit(p) => p.unload(),
            _ => Ok(()),
        };
    }
}

fn required(sym: &Option<String>, name: &str) -> Result<String> {
    sym.clone()
        .ok_or_else(|| anyhow!("{name} is not in /proc/kallsyms (overlay module not loaded?)"))
}

fn kprobe<'a>(ebpf: &'a mut Ebpf, prog: &str) -> Result<&'a mut KProbe> {
    let p = ebpf
        .program_mut(prog)
        .ok_or_else(|| anyhow!("program {prog} missing from the embedded object"))?;
    Ok(p.try_into()?)
}

fn attach_kprobe(ebpf: &mut Ebpf, syms: &Symbols) -> Result<Attached> {
    let copy_up = required(&syms.copy_up, COPY_UP_FN)?;
    let lookup = required(&syms.lookup, LOOKUP_FN)?;
    for (prog, sym) in [
        ("kp_copy_up_one", &copy_up),
        ("krp_copy_up_one", &copy_up),
        ("kp_lookup", &lookup),
        ("krp_lookup", &lookup),
    ] {
        let p = kprobe(ebpf, prog)?;
        p.load().with_context(|| format!("loading {prog}"))?;
        p.attach(sym, 0)
            .map_err(explain_kprobe_error)
            .with_context(|| format!("attaching {prog} to {sym}"))?;
    }
    let mut warnings = Vec::new();
    let mut data_copy = None;
    if let Some((sym, _)) = &syms.data_copy {
        let entry = match syms.data_copy.as_ref().map(|(_, i)| *i) {
            Some(2) => "kp_data_copy_len2",
            _ => "kp_data_copy",
        };
        let r: Result<()> = (|| {
            for prog in [entry, "krp_data_copy"] {
                let p = kprobe(ebpf, prog)?;
                p.load().with_context(|| format!("loading {prog}"))?;
                p.attach(sym, 0)
                    .with_context(|| format!("attaching {prog} to {sym}"))?;
            }
            Ok(())
        })();
        match r {
            Ok(()) => data_copy = Some(sym.clone()),
            Err(e) => warnings.push(format!("data-copy time not measured: {e:#}")),
        }
    }
    if attach_cause_kprobes(ebpf, &syms.cause, &mut warnings) {
        clock_at_flags(ebpf)?;
    }
    Ok(Attached {
        strategy: Strategy::Kprobe,
        data_copy,
        warnings,
    })
}

/// What is lost when a cause hook is missing.
fn cause_loss(func: &str) -> &'static str {
    match func {
        "ovl_copy_up_flags" => "copy-up causes are unknown (except hard links and renames)",
        "ovl_link" => "copy-ups for hard links are reported as metadata changes",
        _ => "copy-ups for renames are reported as metadata changes",
    }
}

/// The cause hooks as kprobes; a hook that cannot attach is a warning.
/// Whether the `ovl_copy_up_flags` one is attached.
fn attach_cause_kprobes(
    ebpf: &mut Ebpf,
    syms: &[Option<String>; 3],
    warnings: &mut Vec<String>,
) -> bool {
    let progs: [&[&str]; 3] = [
        &["kp_copy_up_flags"],
        &["kp_link", "krp_op"],
        &["kp_rename", "krp_op"],
    ];
    let mut flags_hooked = false;
    for ((func, sym), progs) in CAUSE_FNS.iter().zip(syms).zip(progs) {
        let r: Result<()> = (|| {
            let sym = sym
                .as_deref()
                .ok_or_else(|| anyhow!("{func} is not in /proc/kallsyms"))?;
            for &prog in progs {
                let p = kprobe(ebpf, prog)?;
                // krp_op serves two functions: loaded once.
                if p.fd().is_err() {
                    p.load().with_context(|| format!("loading {prog}"))?;
                }
                p.attach(sym, 0)
                    .with_context(|| format!("attaching {prog} to {sym}"))?;
            }
            Ok(())
        })();
        match r {
            Ok(()) => flags_hooked |= *func == CAUSE_FNS[0],
            Err(e) => warnings.push(format!("{}: {e:#}", cause_loss(func))),
        }
    }
    flags_hooked
}

/// Starts copy-up clocks at `ovl_copy_up_flags` entry (its hook is
/// attached); until then they start at `ovl_copy_up_one` entry.
fn clock_at_flags(ebpf: &mut Ebpf) -> Result<()> {
    switch_on(ebpf, "CLOCK_AT_FLAGS").context("starting copy-up clocks at ovl_copy_up_flags")
}

/// aya reports a missing kprobe PMU as a bare file error; say what it means.
fn explain_kprobe_error(e: aya::programs::ProgramError) -> anyhow::Error {
    if kprobes_supported() {
        anyhow!(e)
    } else {
        log::debug!("kprobe attach: {e:#}");
        anyhow!(
            "this kernel has no kprobe support (CONFIG_KPROBES is not set: \
             /sys/bus/event_source/devices/kprobe and kprobe_events are missing)"
        )
    }
}

/// Whether the kernel offers kprobes through perf (or the legacy tracefs file).
pub fn kprobes_supported() -> bool {
    [
        "/sys/bus/event_source/devices/kprobe",
        "/sys/kernel/tracing/kprobe_events",
        "/sys/kernel/debug/tracing/kprobe_events",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).exists())
}

/// What a tracing program is loaded against.
#[derive(Clone, Copy)]
enum Target<'a> {
    /// A function of vmlinux, resolved by name in vmlinux BTF.
    Vmlinux(&'a Btf),
    /// A function of the overlay module: its type id in the module's BTF,
    /// and the module's BTF object.
    Module(BorrowedFd<'a>),
}

fn attach_fentry(ebpf: &mut Ebpf, plan: &Plan) -> Result<Attached> {
    let syms = &plan.symbols;
    // The data-copy function by its BTF name (fe_data_copy reads `len` as
    // argument 3), with its module type id when overlay is a module.
    let data_copy = match &syms.data_copy {
        Some((sym, 3)) => Some(btf_name(sym)),
        _ => None,
    };
    match &plan.fentry_btf {
        FentryBtf::Missing => bail!(
            "{COPY_UP_FN} and {LOOKUP_FN} have no BTF (neither in vmlinux BTF nor in \
             {OVERLAY_BTF}): fentry cannot target them"
        ),
        FentryBtf::Vmlinux => {
            let btf = Btf::from_sys_fs().context("reading vmlinux BTF for fentry")?;
            let target = Target::Vmlinux(&btf);
            let ids = [(COPY_UP_FN, 0), (LOOKUP_FN, 0)];
            let mut a = attach_fentry_to(ebpf, target, ids, data_copy.map(|f| (f, 0)))?;
            let flags_hooked = attach_cause_fentry(ebpf, target, [Some(0); 3], &mut a.warnings);
            start_clock_fentry(ebpf, target, ids[0], flags_hooked)?;
            Ok(a)
        }
        FentryBtf::Module(m) => {
            let obj = module_btf::open(OVERLAY_MODULE)
                .context("looking for the overlay module's BTF object")?
                .ok_or_else(|| {
                    anyhow!(
                        "the kernel has no BTF object named {OVERLAY_MODULE:?} (module \
                         unloaded since {OVERLAY_BTF} was read?)"
                    )
                })?;
            log::debug!("overlay module BTF object id {}", obj.id);
            let target = Target::Module(std::os::fd::AsFd::as_fd(&obj.fd));
            let ids = [(COPY_UP_FN, m.copy_up), (LOOKUP_FN, m.lookup)];
            let data_copy = data_copy.and_then(|f| Some((f, m.data_copy?)));
            let mut a = attach_fentry_to(ebpf, target, ids, data_copy)?;
            let flags_hooked = attach_cause_fentry(ebpf, target, m.cause, &mut a.warnings);
            start_clock_fentry(ebpf, target, ids[0], flags_hooked)?;
            Ok(a)
        }
    }
}

/// Where a copy-up's clock starts with fentry: at `ovl_copy_up_flags` entry
/// when that hook is attached (nothing then runs at `ovl_copy_up_one`
/// entry: fexit sees the arguments), else at `ovl_copy_up_one` entry.
fn start_clock_fentry(
    ebpf: &mut Ebpf,
    target: Target<'_>,
    (copy_up, copy_up_id): (&str, u32),
    flags_hooked: bool,
) -> Result<()> {
    if flags_hooked {
        clock_at_flags(ebpf)
    } else {
        load_attach_tracing(ebpf, target, "fe_copy_up_one", copy_up, copy_up_id, false)
    }
}

/// Loads and attaches the copy-up exit and the lookup pair; `ids` are the
/// functions' type ids in the module BTF (unused for vmlinux, which resolves
/// names).
fn attach_fentry_to(
    ebpf: &mut Ebpf,
    target: Target<'_>,
    [(copy_up, copy_up_id), (lookup, lookup_id)]: [(&str, u32); 2],
    data_copy: Option<(&str, u32)>,
) -> Result<Attached> {
    for (prog, func, id, exit) in [
        ("fx_copy_up_one", copy_up, copy_up_id, true),
        ("fe_lookup", lookup, lookup_id, false),
        ("fx_lookup", lookup, lookup_id, true),
    ] {
        load_attach_tracing(ebpf, target, prog, func, id, exit)?;
    }
    let mut warnings = Vec::new();
    let mut data_copy_fn = None;
    if let Some((func, id)) = data_copy {
        let r = load_attach_tracing(ebpf, target, "fe_data_copy", func, id, false)
            .and_then(|_| load_attach_tracing(ebpf, target, "fx_data_copy", func, id, true));
        match r {
            Ok(()) => data_copy_fn = Some(func.to_string()),
            Err(e) => warnings.push(format!("data-copy time not measured: {e:#}")),
        }
    }
    Ok(Attached {
        strategy: Strategy::Fentry,
        data_copy: data_copy_fn,
        warnings,
    })
}

/// The cause hooks as fentry/fexit (`ids`: module type ids, `None` where the
/// module's BTF lacks the function); a hook that cannot attach is a warning.
/// Whether the `ovl_copy_up_flags` one is attached.
fn attach_cause_fentry(
    ebpf: &mut Ebpf,
    target: Target<'_>,
    ids: [Option<u32>; 3],
    warnings: &mut Vec<String>,
) -> bool {
    let progs: [&[(&str, bool)]; 3] = [
        &[("fe_copy_up_flags", false)],
        &[("fe_link", false), ("fx_link", true)],
        &[("fe_rename", false), ("fx_rename", true)],
    ];
    let mut flags_hooked = false;
    for ((func, id), progs) in CAUSE_FNS.iter().zip(ids).zip(progs) {
        let r: Result<()> = (|| {
            let id = id.ok_or_else(|| anyhow!("{func} has no BTF in {OVERLAY_BTF}"))?;
            for &(prog, exit) in progs {
                load_attach_tracing(ebpf, target, prog, func, id, exit)?;
            }
            Ok(())
        })();
        match r {
            Ok(()) => flags_hooked |= *func == CAUSE_FNS[0],
            Err(e) => warnings.push(format!("{}: {e:#}", cause_loss(func))),
        }
    }
    flags_hooked
}

fn load_attach_tracing(
    ebpf: &mut Ebpf,
    target: Target<'_>,
    prog: &str,
    func: &str,
    id: u32,
    exit: bool,
) -> Result<()> {
    let p = ebpf
        .program_mut(prog)
        .ok_or_else(|| anyhow!("program {prog} missing from the embedded object"))?;
    let what = match target {
        Target::Vmlinux(_) => func.to_string(),
        Target::Module(_) => format!("{OVERLAY_MODULE}:{func} (BTF id {id})"),
    };
    if exit {
        let p: &mut FExit = p.try_into()?;
        match target {
            Target::Vmlinux(btf) => p.load(func, btf),
            Target::Module(fd) => p.load_from_module(id, fd),
        }
        .map_err(explain_load_error)
        .with_context(|| format!("loading {prog} for {what}"))?;
        p.attach()
            .with_context(|| format!("attaching {prog} to {what}"))?;
    } else {
        let p: &mut FEntry = p.try_into()?;
        match target {
            Target::Vmlinux(btf) => p.load(func, btf),
            Target::Module(fd) => p.load_from_module(id, fd),
        }
        .map_err(explain_load_error)
        .with_context(|| format!("loading {prog} for {what}"))?;
        p.attach()
            .with_context(|| format!("attaching {prog} to {what}"))?;
    }
    Ok(())
}

fn explain_load_error(e: aya::programs::ProgramError) -> anyhow::Error {
    let msg = format!("{e:#}");
    if msg.contains("os error 1)") {
        log::debug!("fentry load: {msg}");
        anyhow!(
            "the kernel refused the program with EPERM before verifying it: this kernel does \
             not allow fentry/fexit programs (lockdown, or no BPF trampoline support)"
        )
    } else {
        anyhow!(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffffc0a01000 t ovl_copy_up_one.isra.0\t[overlay]
ffffffffc0a02000 t ovl_copy_up_one.part.0\t[overlay]
ffffffffc0a03000 T ovl_lookup\t[overlay]
ffffffffc0a03100 t ovl_lookup.cold\t[overlay]
ffffffffc0a04000 t ovl_copy_up_data\t[overlay]
ffffffffc0a05000 d ovl_copy_up_file\t[overlay]
ffffffff81000000 T ovl_lookup_layer
";

    #[test]
    fn finds_exact_and_clone_symbols() {
        assert_eq!(
            find_symbol(KALLSYMS, "ovl_lookup").as_deref(),
            Some("ovl_lookup")
        );
        assert_eq!(
            find_symbol(KALLSYMS, "ovl_copy_up_one").as_deref(),
            Some("ovl_copy_up_one.isra.0")
        );
        // A data symbol of the same name is not a function.
        assert_eq!(find_symbol(KALLSYMS, "ovl_copy_up_file"), None);
        assert_eq!(find_symbol(KALLSYMS, "ovl_copy_up"), None);
        assert_eq!(find_symbol("garbage\n\n1 2\n", "ovl_lookup"), None);
    }

    #[test]
    fn exact_name_beats_clone() {
        let k = "1 t f.constprop.0\n2 t f\n";
        assert_eq!(find_symbol(k, "f").as_deref(), Some("f"));
    }

    #[test]
    fn plan_without_btf() {
        let p = plan(ProbeMode::Auto, None, KALLSYMS);
        assert_eq!(p.order, vec![Strategy::Kprobe]);
        assert_eq!(p.symbols.copy_up.as_deref(), Some("ovl_copy_up_one.isra.0"));
        // Without a prototype the len argument is unknown: no data-copy probe.
        assert_eq!(p.symbols.data_copy, None);
        let p = plan(ProbeMode::Fentry, None, "");
        assert_eq!(p.order, vec![Strategy::Fentry]);
        assert!(p.notes.iter().any(|n| n.contains("not in /proc/kallsyms")));
    }

    const MODULE_KALLSYMS: &str = "\
ffffffffc0a01000 t ovl_copy_up_one\t[overlay]
ffffffffc0a03000 T ovl_lookup\t[overlay]
ffffffffc0a04000 t ovl_copy_up_file\t[overlay]
";
    const OVERLAY_FNS: [&str; 3] = ["ovl_lookup", "ovl_copy_up_file", "ovl_copy_up_one"];

    #[test]
    fn plan_fentry_on_the_overlay_module() {
        let btf = module_btf::test_btf::kernel(&[], Some(&OVERLAY_FNS));
        let p = plan(ProbeMode::Auto, Some(&btf), MODULE_KALLSYMS);
        assert_eq!(p.order, vec![Strategy::Fentry, Strategy::Kprobe]);
        // Split ids follow vmlinux's 3 types, in the module's order.
        assert_eq!(
            p.fentry_btf,
            FentryBtf::Module(ModuleFuncs {
                copy_up: 6,
                lookup: 4,
                data_copy: Some(5),
                cause: [None; 3],
            })
        );
        assert_eq!(
            p.symbols.data_copy,
            Some(("ovl_copy_up_file".to_string(), 3))
        );
        assert!(
            p.notes.iter().any(|n| n.contains(
                "overlay is a module with BTF (/sys/kernel/btf/overlay): fentry on the module, \
                 kprobe fallback"
            )),
            "{:?}",
            p.notes
        );
        let forced = plan(ProbeMode::Fentry, Some(&btf), MODULE_KALLSYMS);
        assert_eq!(forced.order, vec![Strategy::Fentry]);
        assert_eq!(forced.fentry_btf, p.fentry_btf);
        let kprobe = plan(ProbeMode::Kprobe, Some(&btf), MODULE_KALLSYMS);
        assert_eq!(kprobe.order, vec![Strategy::Kprobe]);
    }

    #[test]
    fn plan_finds_the_cause_functions() {
        let fns = [
            "ovl_lookup",
            "ovl_copy_up_one",
            "ovl_rename",
            "ovl_copy_up_flags",
        ];
        let btf = module_btf::test_btf::kernel(&[], Some(&fns));
        let k = format!("{MODULE_KALLSYMS}ffffffffc0a05000 t ovl_copy_up_flags\t[overlay]\nffffffffc0a06000 t ovl_rename\t[overlay]\n");
        let p = plan(ProbeMode::Auto, Some(&btf), &k);
        let FentryBtf::Module(m) = &p.fentry_btf else {
            panic!("{:?}", p.fentry_btf)
        };
        // ovl_link has neither BTF nor a symbol: that cause degrades.
        assert_eq!(m.cause, [Some(7), None, Some(6)]);
        assert_eq!(
            p.symbols.cause,
            [
                Some("ovl_copy_up_flags".to_string()),
                None,
                Some("ovl_rename".to_string())
            ]
        );
        assert!(cause_loss("ovl_link").contains("hard links"));
    }

    #[test]
    fn plan_fentry_on_vmlinux_when_built_in() {
        let btf = module_btf::test_btf::kernel(&OVERLAY_FNS, None);
        let p = plan(ProbeMode::Auto, Some(&btf), MODULE_KALLSYMS);
        assert_eq!(p.order, vec![Strategy::Fentry, Strategy::Kprobe]);
        assert_eq!(p.fentry_btf, FentryBtf::Vmlinux);
        assert!(p.notes.iter().any(|n| n.contains("built in")));
    }

    #[test]
    fn plan_kprobe_without_function_btf() {
        // Module BTF without the copy-up function, or no module BTF at all.
        for btf in [
            module_btf::test_btf::kernel(&[], Some(&["ovl_lookup"])),
            module_btf::test_btf::kernel(&[], None),
        ] {
            let p = plan(ProbeMode::Auto, Some(&btf), MODULE_KALLSYMS);
            assert_eq!(p.order, vec![Strategy::Kprobe]);
            assert_eq!(p.fentry_btf, FentryBtf::Missing);
            assert!(
                p.notes.iter().any(|n| n.ends_with(": kprobe")),
                "{:?}",
                p.notes
            );
        }
    }

    #[test]
    fn plan_warns_about_clones() {
        let btf = module_btf::test_btf::kernel(&[], Some(&OVERLAY_FNS));
        let p = plan(ProbeMode::Auto, Some(&btf), KALLSYMS);
        // Still tried (attaching decides), but the reason is on record.
        assert_eq!(p.order, vec![Strategy::Fentry, Strategy::Kprobe]);
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("only as the compiler clone ovl_copy_up_one.isra.0")),
            "{:?}",
            p.notes
        );
        // The data-copy function keeps its module id under its BTF name.
        let FentryBtf::Module(m) = &p.fentry_btf else {
            panic!("{:?}", p.fentry_btf)
        };
        assert_eq!(m.data_copy, None, "ovl_copy_up_data is not in this BTF");
    }
}
