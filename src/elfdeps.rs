//! The files a program needs in the guest — its ELF interpreter and shared
//! libraries — found by reading ELF headers (goblin), never by executing the
//! program (ops's way, `LD_TRACE_LOADED_OBJECTS=1`, runs the program's own
//! PT_INTERP on the host).
//!
//! Search order per `DT_NEEDED` entry, as the dynamic loader in the guest
//! does it without an ld.so.cache: a name with `/` is a path; else the
//! `DT_RPATH` of the loading object (only when it has no `DT_RUNPATH`), its
//! `DT_RUNPATH`, then the default directories. `$ORIGIN` is the directory of
//! the loading object. Only regular, world-readable ELF shared objects for
//! x86-64 are accepted, so a hostile program cannot make root copy a private
//! host file (say, `DT_NEEDED /root/key.pem`) into its image.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use goblin::elf::{header, program_header, Elf};

/// Where the guest's loader looks when RPATH/RUNPATH do not say.
pub const DEFAULT_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Refuse absurd inputs: an ELF header bigger than this is not a library.
const MAX_ELF_BYTES: u64 = 512 * 1024 * 1024;
const MAX_OBJECTS: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error("program {path}: {reason}")]
    Program { path: PathBuf, reason: String },
    #[error("program {program}: {what} {path}: {reason}")]
    Dependency {
        program: PathBuf,
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("program {program}: library {name:?} (needed by {by}) not found in {searched}")]
    NotFound {
        program: PathBuf,
        name: String,
        by: PathBuf,
        searched: String,
    },
}

/// A file the guest needs: read from `host` (as opened and checked), staged
/// at the same absolute `guest` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needed {
    pub guest: PathBuf,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

struct Parsed {
    interp: Option<String>,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
}

fn parse(bytes: &[u8]) -> Result<Parsed, String> {
    let elf = Elf::parse(bytes).map_err(|e| format!("not a parseable ELF file: {e}"))?;
    if !elf.is_64 || elf.header.e_machine != header::EM_X86_64 {
        return Err("not an x86-64 ELF file".into());
    }
    let split = |v: &[&str]| -> Vec<String> {
        v.iter()
            .flat_map(|s| s.split(':'))
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let interp = elf
        .program_headers
        .iter()
        .any(|ph| ph.p_type == program_header::PT_INTERP)
        .then(|| elf.interpreter.map(str::to_owned))
        .flatten();
    Ok(Parsed {
        interp,
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        rpath: split(&elf.rpaths),
        runpath: split(&elf.runpaths),
    })
}

/// Open and read a dependency: a regular file, readable by everyone, at most
/// MAX_ELF_BYTES. Returns its bytes and mode.
fn read_public(path: &Path) -> Result<(Vec<u8>, u32), String> {
    let f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let m = f.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !m.is_file() {
        return Err("not a regular file".into());
    }
    if m.mode() & 0o004 == 0 {
        return Err(format!(
            "not readable by everyone on the host (mode {:o}); only public files are copied into images",
            m.mode() & 0o7777
        ));
    }
    if m.len() > MAX_ELF_BYTES {
        return Err(format!("larger than {MAX_ELF_BYTES} bytes"));
    }
    let mut bytes = Vec::with_capacity(m.len() as usize);
    f.take(MAX_ELF_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    Ok((bytes, m.mode() & 0o7777))
}

/// `..` and `.` resolved lexically, so the path can be staged under a root:
/// the guest has no symlinks of its own, so this is where its loader ends up.
pub fn normalize(p: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir => {}
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::Prefix(_) => return None,
        }
    }
    (p.is_absolute() && out != Path::new("/")).then_some(out)
}

fn expand_origin(entry: &str, object: &Path) -> PathBuf {
    let origin = object.parent().unwrap_or(Path::new("/"));
    let origin = origin.to_string_lossy();
    PathBuf::from(
        entry
            .replace("${ORIGIN}", &origin)
            .replace("$ORIGIN", &origin),
    )
}

/// The interpreter and every shared library `program` (already read as
/// `program_bytes`) needs, transitively. A static program needs nothing.
pub fn resolve(program: &Path, program_bytes: &[u8]) -> Result<Vec<Needed>, DepsError> {
    let top = parse(program_bytes).map_err(|reason| DepsError::Program {
        path: program.to_owned(),
        reason,
    })?;
    let dep_err = |what, path: &Path, reason: String| DepsError::Dependency {
        program: program.to_owned(),
        what,
        path: path.to_owned(),
        reason,
    };
    let mut out: BTreeMap<PathBuf, Needed> = BTreeMap::new();
    if let Some(interp) = &top.interp {
        let ip = PathBuf::from(interp);
        if !ip.is_absolute() {
            return Err(dep_err(
                "interpreter",
                &ip,
                "is not an absolute path".into(),
            ));
        }
        let (bytes, mode) = read_public(&ip).map_err(|r| dep_err("interpreter", &ip, r))?;
        let p = parse(&bytes).map_err(|r| dep_err("interpreter", &ip, r))?;
        if p.interp.is_some() {
            return Err(dep_err(
                "interpreter",
                &ip,
                "has an interpreter itself (not a dynamic loader)".into(),
            ));
        }
        let guest = normalize(&ip)
            .ok_or_else(|| dep_err("interpreter", &ip, "is not a file path".into()))?;
        out.insert(guest.clone(), Needed { guest, bytes, mode });
    }
    if top.needed.is_empty() {
        return Ok(out.into_values().collect());
    }
    // Breadth-first over (name, loader path, loader's rpath chain).
    let mut queue: VecDeque<(String, PathBuf, Vec<String>, Vec<String>)> = top
        .needed
        .iter()
        .map(|n| {
            (
                n.clone(),
                program.to_owned(),
                top.rpath.clone(),
                top.runpath.clone(),
            )
        })
        .collect();
    let mut found_names: BTreeMap<String, PathBuf> = BTreeMap::new();
    while let Some((name, by, rpath, runpath)) = queue.pop_front() {
        if found_names.contains_key(&name) {
            continue;
        }
        let candidates: Vec<PathBuf> = if name.contains('/') {
            vec![PathBuf::from(&name)]
        } else {
            let mut dirs: Vec<PathBuf> = Vec::new();
            if runpath.is_empty() {
                dirs.extend(rpath.iter().map(|d| expand_origin(d, &by)));
            }
            dirs.extend(runpath.iter().map(|d| expand_origin(d, &by)));
            dirs.extend(DEFAULT_DIRS.iter().map(PathBuf::from));
            dirs.into_iter().map(|d| d.join(&name)).collect()
        };
        let mut hit = None;
        for c in &candidates {
            if !c.is_absolute() {
                continue;
            }
            match std::fs::metadata(c) {
                Ok(m) if m.is_file() => {
                    hit = Some(c.clone());
                    break;
                }
                _ => continue,
            }
        }
        let Some(path) = hit else {
            return Err(DepsError::NotFound {
                program: program.to_owned(),
                name,
                by,
                searched: candidates
                    .iter()
                    .map(|c| c.parent().unwrap_or(c).display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
            });
        };
        let (bytes, mode) = read_public(&path).map_err(|r| dep_err("library", &path, r))?;
        let p = parse(&bytes).map_err(|r| dep_err("library", &path, r))?;
        let elf_type = Elf::parse_header(&bytes).map(|h| h.e_type).unwrap_or(0);
        if elf_type != header::ET_DYN {
            return Err(dep_err("library", &path, "is not a shared object".into()));
        }
        found_names.insert(name, path.clone());
        for n in &p.needed {
            // A library's own RPATH applies to it; the program's RPATH to all.
            let mut chain = p.rpath.clone();
            chain.extend(rpath.iter().cloned());
            queue.push_back((n.clone(), path.clone(), chain, p.runpath.clone()));
        }
        let guest = normalize(&path)
            .ok_or_else(|| dep_err("library", &path, "is not a file path".into()))?;
        out.entry(guest.clone())
            .or_insert(Needed { guest, bytes, mode });
        if out.len() > MAX_OBJECTS {
            return Err(DepsError::Program {
                path: program.to_owned(),
                reason: format!("needs more than {MAX_OBJECTS} shared objects"),
            });
        }
    }
    Ok(out.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_host_program_resolves_to_its_loader_and_libc() {
        let prog = Path::new("/bin/true");
        let bytes = std::fs::read(prog).unwrap();
        let deps = resolve(prog, &bytes).unwrap();
        let names: Vec<String> = deps.iter().map(|d| d.guest.display().to_string()).collect();
        assert!(names.iter().any(|n| n.contains("ld-linux")), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with("/libc.so.6")), "{names:?}");
        assert!(deps.iter().all(|d| d.bytes.starts_with(b"\x7fELF")));
    }

    #[test]
    fn a_static_program_needs_nothing() {
        let bytes = crate::opsconfig::placeholder_elf();
        assert!(resolve(Path::new("/x"), &bytes).unwrap().is_empty());
    }

    #[test]
    fn guest_paths_never_climb_out() {
        assert_eq!(
            normalize(Path::new("/opt/app/bin/../lib/x.so")),
            Some(PathBuf::from("/opt/app/lib/x.so"))
        );
        assert_eq!(
            normalize(Path::new("/../../etc/x.so")),
            Some(PathBuf::from("/etc/x.so"))
        );
        assert_eq!(normalize(Path::new("lib/x.so")), None);
    }

    #[test]
    fn origin_is_the_loaders_dir() {
        assert_eq!(
            expand_origin("$ORIGIN/../lib", Path::new("/opt/app/bin/app")),
            PathBuf::from("/opt/app/bin/../lib")
        );
    }
}
