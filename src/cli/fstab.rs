//! `-o key=value,flag` (command line, mount.fuse3's helper form, fstab) is
//! rewritten into the long flags `--key=value --flag` of the same mount
//! options, in place, so clap parses and validates both forms alike and a
//! later option overrides an earlier one whichever form each came in.

use std::collections::HashMap;
use std::ffi::OsString;

use super::options::{is_generic_mount_option, mount_option_args, option_key};

/// What the rewriting needs to know about one mount option.
struct Known {
    long: String,
    takes_value: bool,
}

/// Rewrites every `-o OPTIONS` of an `rbdfs mount ...` command line (after
/// [`super::normalize_args`]); other command lines are returned unchanged.
/// `-o` is recognised in every form clap accepts: `-o X`, `-oX`, `-o=X`, and
/// last in a cluster of short flags (`-fo X`).
pub fn expand_mount_options(
    args: Vec<OsString>,
    mount: &clap::Command,
) -> Result<Vec<OsString>, String> {
    if args.get(1).and_then(|a| a.to_str()) != Some("mount") {
        return Ok(args);
    }
    let known: HashMap<String, Known> = mount_option_args()
        .iter()
        .map(|a| {
            let known = Known {
                long: a.get_long().unwrap().to_string(),
                takes_value: a.get_action().takes_values(),
            };
            (option_key(a), known)
        })
        .collect();
    let short_takes_value = |c: char| {
        mount
            .get_arguments()
            .find(|a| a.get_short() == Some(c))
            .is_some_and(|a| a.get_action().takes_values())
    };
    let long_takes_value = |name: &str| {
        mount
            .get_arguments()
            .find(|a| a.get_long() == Some(name))
            .is_some_and(|a| a.get_action().takes_values())
    };

    let mut out: Vec<OsString> = args[..2].to_vec();
    let mut rest = args.into_iter().skip(2).peekable();
    while let Some(arg) = rest.next() {
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            out.push(arg);
            out.extend(rest);
            break;
        }
        if let Some(long) = s.strip_prefix("--") {
            // `--conf FILE`: its value is not ours to look at.
            let takes_next = !long.contains('=') && long_takes_value(long);
            out.push(arg);
            if takes_next && let Some(value) = rest.next() {
                out.push(value);
            }
            continue;
        }
        let Some(cluster) = s.strip_prefix('-').filter(|c| !c.is_empty()) else {
            out.push(arg); // a positional (or `-`)
            continue;
        };
        // The first short flag in the cluster that takes a value takes the
        // rest of the cluster (without a leading `=`), or else the next
        // argument.
        let Some((pos, c)) = cluster.char_indices().find(|&(_, c)| short_takes_value(c)) else {
            out.push(arg);
            continue;
        };
        // `-o=` and `-oX` carry their value (`-o=` an empty one).
        let after = &cluster[pos + c.len_utf8()..];
        let has_attached = !after.is_empty();
        let attached = after.strip_prefix('=').unwrap_or(after);
        if c != 'o' {
            out.push(arg);
            if !has_attached && let Some(value) = rest.next() {
                out.push(value);
            }
            continue;
        }
        if pos > 0 {
            out.push(format!("-{}", &cluster[..pos]).into());
        }
        let value = if !has_attached {
            match rest.next() {
                Some(v) => v
                    .into_string()
                    .map_err(|v| format!("mount options {v:?} are not UTF-8"))?,
                None => {
                    // Let clap say that -o needs a value.
                    out.push("-o".into());
                    continue;
                }
            }
        } else {
            attached.to_string()
        };
        for opt in value.split(',').filter(|o| !o.is_empty()) {
            out.extend(expand_one(opt, &known)?);
        }
    }
    Ok(out)
}

/// One `key=value` or `flag` of `-o`: its long flag, nothing for a generic
/// mount(8) option, or why it is refused.
fn expand_one(opt: &str, known: &HashMap<String, Known>) -> Result<Option<OsString>, String> {
    let (key, value) = match opt.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    };
    match (known.get(key), value) {
        (Some(k), Some(v)) if k.takes_value => Ok(Some(format!("--{}={v}", k.long).into())),
        (Some(k), None) if !k.takes_value => Ok(Some(format!("--{}", k.long).into())),
        (Some(_), None) => Err(format!("mount option {key} needs a value")),
        (Some(_), Some(_)) => Err(format!("mount option {key} takes no value ('{opt}')")),
        (None, _) if is_generic_mount_option(key) => Ok(None),
        (None, _) => Err(format!(
            "unknown mount option '{opt}' (see rbdfs mount --help)"
        )),
    }
}
