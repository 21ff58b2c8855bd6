//! fentry/fexit on functions of a kernel module (overlay.ko on distribution
//! kernels) need two things the kernel resolves in the module's own BTF:
//!
//! - the module's BTF *object*, as an fd for `BPF_PROG_LOAD`'s
//!   `attach_btf_obj_fd`. It is found as libbpf does (`load_module_btfs`):
//!   walk `BPF_BTF_GET_NEXT_ID`, open each id with `BPF_BTF_GET_FD_BY_ID`, read
//!   `struct bpf_btf_info` with `BPF_OBJ_GET_INFO_BY_FD` and keep the kernel
//!   BTF whose `name` is the module's;
//! - the function's type id in that BTF: the module's split BTF
//!   (`/sys/kernel/btf/<module>`) numbers its types after vmlinux's last id,
//!   the same numbering the kernel uses for the object.

use std::{
    io,
    mem::size_of,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{anyhow, Result};
use btf_rs::{Btf, Type};

// enum bpf_cmd (include/uapi/linux/bpf.h).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_BTF_GET_FD_BY_ID: libc::c_int = 19;
const BPF_BTF_GET_NEXT_ID: libc::c_int = 23;

/// `union bpf_attr` for `BPF_*_GET_NEXT_ID` and `BPF_*_GET_FD_BY_ID`.
#[repr(C)]
#[derive(Clone, Copy)]
struct IdAttr {
    /// `start_id`, or `btf_id` for `BPF_BTF_GET_FD_BY_ID`.
    start_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD` (`info` is `__aligned_u64`).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The members of `union bpf_attr` used here. The kernel accepts a shorter
/// attr than its own (and checks that a longer one ends in zeroes).
#[repr(C)]
union BpfAttr {
    id: IdAttr,
    info: InfoAttr,
}

impl BpfAttr {
    fn zeroed() -> Self {
        // SAFETY: every member is plain integers, for which all zeroes is valid.
        unsafe { std::mem::zeroed() }
    }
}

/// `struct bpf_btf_info` (5.11+ layout; 5.10 and older stop after `id`).
#[repr(C, align(8))]
#[derive(Debug, Default, Clone, Copy)]
struct BtfInfo {
    btf: u64,
    btf_size: u32,
    id: u32,
    name: u64,
    name_len: u32,
    kernel_btf: u32,
}

fn sys_bpf(cmd: libc::c_int, attr: &mut BpfAttr) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised bpf_attr prefix of the size
    // passed; the kernel writes at most that many bytes into it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BpfAttr,
            size_of::<BpfAttr>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The id of the next BTF object after `start`, or None at the end.
fn btf_next_id(start: u32) -> io::Result<Option<u32>> {
    let mut attr = BpfAttr::zeroed();
    attr.id = IdAttr {
        start_id: start,
        next_id: 0,
        open_flags: 0,
    };
    match sys_bpf(BPF_BTF_GET_NEXT_ID, &mut attr) {
        // SAFETY: the kernel filled the id member it was given.
        Ok(_) => Ok(Some(unsafe { attr.id.next_id })),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// An fd for BTF object `id`, or None when it went away meanwhile.
fn btf_fd_by_id(id: u32) -> io::Result<Option<OwnedFd>> {
    let mut attr = BpfAttr::zeroed();
    attr.id = IdAttr {
        start_id: id,
        next_id: 0,
        open_flags: 0,
    };
    match sys_bpf(BPF_BTF_GET_FD_BY_ID, &mut attr) {
        Ok(fd) => {
            let fd = libc::c_int::try_from(fd)
                .map_err(|_| io::Error::other(format!("bpf() returned fd {fd}")))?;
            // SAFETY: the kernel just opened `fd` for us; nothing else owns it.
            Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Name length the kernel accepts for `bpf_btf_info::name` (module names are
/// at most MODULE_NAME_LEN - 1 = 55 bytes on 64-bit).
const NAME_BUF: usize = 64;

/// The object's name ("vmlinux", a module's name, "" for programs' BTF) and
/// whether it is kernel BTF.
fn btf_name(fd: &OwnedFd) -> io::Result<(String, bool)> {
    let mut name = [0u8; NAME_BUF];
    let mut info = BtfInfo {
        name: name.as_mut_ptr() as u64,
        name_len: NAME_BUF as u32,
        ..BtfInfo::default()
    };
    let mut attr = BpfAttr::zeroed();
    attr.info = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<BtfInfo>() as u32,
        info: &mut info as *mut BtfInfo as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // The kernel wrote the name through the pointer in `info`.
    Ok((c_name(&name), info.kernel_btf != 0))
}

/// The NUL-terminated string at the start of `buf` (all of it when there is
/// no NUL), lossily decoded.
fn c_name(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A kernel module's BTF object.
#[derive(Debug)]
pub struct ModuleBtf {
    /// For `attach_btf_obj_fd`.
    pub fd: OwnedFd,
    /// The object's id (as `bpftool btf list` shows it).
    pub id: u32,
}

/// Opens the BTF object of kernel module `module`. None when no kernel BTF
/// object has that name (module not loaded, or built without
/// CONFIG_DEBUG_INFO_BTF_MODULES); errors are the syscalls' (EPERM without
/// CAP_SYS_ADMIN).
pub fn open(module: &str) -> Result<Option<ModuleBtf>> {
    let mut id = 0;
    loop {
        id = match btf_next_id(id).map_err(|e| anyhow!("BPF_BTF_GET_NEXT_ID: {e}"))? {
            Some(next) if next > id => next,
            // Ids only grow; anything else would loop forever.
            _ => return Ok(None),
        };
        let Some(fd) = btf_fd_by_id(id).map_err(|e| anyhow!("BPF_BTF_GET_FD_BY_ID {id}: {e}"))?
        else {
            continue;
        };
        let (name, kernel) =
            btf_name(&fd).map_err(|e| anyhow!("BPF_OBJ_GET_INFO_BY_FD (BTF {id}): {e}"))?;
        if kernel && name == module {
            return Ok(Some(ModuleBtf { fd, id }));
        }
    }
}

/// The type id of function `func` in split BTF `split` (a module's, parsed on
/// top of vmlinux). Only the split part is searched: a vmlinux function of
/// the same name is not the module's.
pub fn func_id(split: &Btf, func: &str) -> Option<u32> {
    let section = split.split()?;
    let ids = section.resolve_ids_by_name(func).ok()?;
    ids.into_iter()
        .find(|&id| matches!(split.resolve_type_by_id(id), Ok(Type::Func(_))))
}

/// Synthetic vmlinux and overlay-module BTF for hermetic tests.
#[cfg(test)]
pub(crate) mod test_btf {
    use std::path::PathBuf;

    use btf_rs::Btf;

    use crate::sys::btf::KernelBtf;

    pub const KIND_INT: u32 = 1 << 24;
    pub const KIND_FUNC: u32 = 12 << 24;
    pub const KIND_FUNC_PROTO: u32 = 13 << 24;

    /// A BTF blob: header, type section and string section.
    pub fn blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let type_len = (types.len() * 4) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(&0xeb9fu16.to_le_bytes()); // magic
        b.push(1); // version
        b.push(0); // flags
        for v in [24u32, 0, type_len, type_len, strings.len() as u32] {
            // hdr_len, type_off, type_len, str_off, str_len
            b.extend_from_slice(&v.to_le_bytes());
        }
        for t in types {
            b.extend_from_slice(&t.to_le_bytes());
        }
        b.extend_from_slice(strings);
        b
    }

    /// String table under construction; offsets start at `base`.
    struct Strings(u32, Vec<u8>);

    impl Strings {
        fn add(&mut self, s: &str) -> u32 {
            let off = self.0 + self.1.len() as u32;
            self.1.extend_from_slice(s.as_bytes());
            self.1.push(0);
            off
        }
    }

    /// vmlinux: [1] int, [2] `int (int ofs, int dentry, int new, int len)`,
    /// [3] func `vfs_read`; then each of `vmlinux_funcs` as a func of type 2.
    /// The overlay module's split BTF holds `module_funcs` the same way, with
    /// ids after vmlinux's. No overlay BTF when `module_funcs` is None.
    pub fn kernel(vmlinux_funcs: &[&str], module_funcs: Option<&[&str]>) -> KernelBtf {
        let mut st = Strings(0, vec![0]);
        let mut t = vec![st.add("int"), KIND_INT, 4, 0x20];
        t.extend([0, KIND_FUNC_PROTO | 4, 1]);
        for p in ["ofs", "dentry", "new", "len"] {
            t.extend([st.add(p), 1]);
        }
        t.extend([st.add("vfs_read"), KIND_FUNC, 2]);
        for f in vmlinux_funcs {
            t.extend([st.add(f), KIND_FUNC, 2]);
        }
        let vmlinux = Btf::from_bytes(&blob(&t, &st.1)).unwrap();
        let overlay = module_funcs.map(|funcs| {
            let mut mst = Strings(st.1.len() as u32, Vec::new());
            let mut mt = Vec::new();
            for f in funcs {
                mt.extend([mst.add(f), KIND_FUNC, 2]);
            }
            Btf::from_split_bytes(&blob(&mt, &mst.1), &vmlinux).unwrap()
        });
        KernelBtf {
            vmlinux,
            overlay,
            vmlinux_path: PathBuf::from("/synthetic/vmlinux"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{align_of, offset_of};

    use super::*;

    /// Layouts as in include/uapi/linux/bpf.h.
    #[test]
    fn uapi_layouts() {
        assert_eq!(size_of::<BtfInfo>(), 32);
        assert_eq!(align_of::<BtfInfo>(), 8);
        assert_eq!(offset_of!(BtfInfo, btf_size), 8);
        assert_eq!(offset_of!(BtfInfo, id), 12);
        assert_eq!(offset_of!(BtfInfo, name), 16);
        assert_eq!(offset_of!(BtfInfo, name_len), 24);
        assert_eq!(offset_of!(BtfInfo, kernel_btf), 28);
        assert_eq!(offset_of!(IdAttr, next_id), 4);
        assert_eq!(offset_of!(IdAttr, open_flags), 8);
        assert_eq!(offset_of!(InfoAttr, info_len), 4);
        assert_eq!(offset_of!(InfoAttr, info), 8);
        assert_eq!(size_of::<BpfAttr>(), 16);
        assert_eq!(align_of::<BpfAttr>(), 8);
    }

    #[test]
    fn c_names() {
        assert_eq!(c_name(b"overlay\0\0\0"), "overlay");
        assert_eq!(c_name(b"vmlinux"), "vmlinux");
        assert_eq!(c_name(b"\0overlay"), "");
        assert_eq!(c_name(b"ov\xffl\0"), "ov\u{fffd}l");
    }

    #[test]
    fn split_ids_continue_after_the_base() {
        // vmlinux ids 1..=3 plus `twin` (4); the module's follow from 5.
        let k = test_btf::kernel(&["twin"], Some(&["ovl_lookup", "twin", "ovl_copy_up_one"]));
        let m = k.overlay.as_ref().unwrap();
        assert_eq!(func_id(m, "ovl_lookup"), Some(5));
        // The module's own function, not vmlinux's namesake.
        assert_eq!(func_id(m, "twin"), Some(6));
        assert_eq!(func_id(m, "ovl_copy_up_one"), Some(7));
        // vmlinux functions are not the module's; non-functions do not count.
        assert_eq!(func_id(m, "vfs_read"), None);
        assert_eq!(func_id(m, "int"), None);
        assert_eq!(func_id(m, "absent"), None);
        // A base (non-split) BTF has no module part.
        assert_eq!(func_id(&k.vmlinux, "vfs_read"), None);
        // The module's prototypes resolve through vmlinux's types.
        assert_eq!(k.param_index("ovl_copy_up_one", "len"), Some(3));
    }

    /// The walk against the real kernel: vmlinux's BTF object is kernel BTF
    /// named "vmlinux" (needs root; the build machines' kernel has BTF).
    #[test]
    fn finds_vmlinux_on_this_kernel() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0
            || !std::path::Path::new("/sys/kernel/btf/vmlinux").exists()
        {
            eprintln!("SKIPPED: finds_vmlinux_on_this_kernel: needs root and kernel BTF");
            return;
        }
        let found = open("vmlinux").unwrap().expect("vmlinux BTF object");
        assert!(found.id > 0);
        let (name, kernel) = btf_name(&found.fd).unwrap();
        assert_eq!((name.as_str(), kernel), ("vmlinux", true));
    }

    /// On a kernel with BTF, the walk ends (vmlinux is found, a module that
    /// cannot exist is not) or fails with the syscall's error, never loops.
    #[test]
    fn open_terminates() {
        match open("no_such_module_xyz") {
            Ok(found) => assert!(found.is_none()),
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(msg.starts_with("BPF_"), "{msg}");
            }
        }
    }
}
