//! The hosts a remote command goes to: `-H h1,user@h2,@GROUP`, `--hosts-file FILE` (one entry
//! a line), and Ansible inventory groups, resolved with `ansible-inventory --list` so that
//! the inventory's own ways of naming and reaching hosts apply.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use super::Failure;

/// One host: the name shown with its results, and how ssh reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// As the user or the inventory names it.
    pub name: String,
    /// ssh's destination (`[user@]host`).
    pub dest: String,
    /// A port other than ssh's default, from the inventory.
    pub port: Option<String>,
}

impl Target {
    fn plain(entry: &str) -> Target {
        Target {
            name: entry.to_string(),
            dest: entry.to_string(),
            port: None,
        }
    }
}

/// The hosts named by `-H` (comma-separated) and `--hosts-file`, in order, each once.
/// `@GROUP` entries are looked up in the Ansible inventory (`inventory`, or Ansible's own).
pub fn targets(
    list: Option<&str>,
    file: Option<&Path>,
    inventory: Option<&Path>,
) -> Result<Vec<Target>, Failure> {
    let mut entries: Vec<String> = list
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Failure::new(format!("cannot read hosts file {}: {e}", file.display())))?;
        entries.extend(file_entries(&text));
    }
    let mut out: Vec<Target> = Vec::new();
    let mut groups: Option<Inventory> = None;
    for entry in entries {
        check_entry(&entry)?;
        let found = match entry.strip_prefix('@') {
            Some(group) => {
                if groups.is_none() {
                    groups = Some(Inventory::load(inventory)?);
                }
                groups
                    .as_ref()
                    .map(|inv| inv.group(group))
                    .transpose()?
                    .unwrap_or_default()
            }
            None => vec![Target::plain(&entry)],
        };
        for t in found {
            check_target(&t)?;
            if !out.iter().any(|o| o.name == t.name) {
                out.push(t);
            }
        }
    }
    if out.is_empty() {
        return Err(Failure::new(
            "no hosts to run on: -H and --hosts-file name none",
        ));
    }
    Ok(out)
}

/// Of `targets`, those `names` (comma-separated) names, in the order of `targets`; a name
/// that is not among them is refused.
pub fn only(targets: Vec<Target>, names: &str) -> Result<Vec<Target>, Failure> {
    let wanted: Vec<&str> = names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if let Some(n) = wanted
        .iter()
        .find(|n| !targets.iter().any(|t| t.name == **n))
    {
        let all: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        return Err(Failure::new(format!(
            "--only names {n}, which is not one of the hosts ({})",
            all.join(", ")
        )));
    }
    if wanted.is_empty() {
        return Err(Failure::new("--only names no host"));
    }
    Ok(targets
        .into_iter()
        .filter(|t| wanted.contains(&t.name.as_str()))
        .collect())
}

/// The entries of a hosts file: a line's first word, `#` to the end of a line a comment.
fn file_entries(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

/// A host entry becomes an ssh argument: one that ssh would read as an option, or that holds
/// what a shell or ssh's own syntax would split, is refused here.
fn check_entry(entry: &str) -> Result<(), Failure> {
    let ok = !entry.starts_with('-')
        && entry
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:@[]%".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "'{entry}' is not a host name (letters, digits and -_.:@[]% only, not starting \
             with -)"
        )))
    }
}

/// What an inventory says about a host reaches ssh as arguments: held to the rules of a host
/// entry (its name and address), of a user name, and of a port number.
fn check_target(t: &Target) -> Result<(), Failure> {
    check_entry(&t.name)?;
    let (user, host) = match t.dest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, t.dest.as_str()),
    };
    check_entry(host)?;
    if let Some(u) = user {
        let ok = !u.is_empty()
            && !u.starts_with('-')
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok {
            return Err(Failure::new(format!(
                "host {}: '{u}' is not a user name (letters, digits and -_. only)",
                t.name
            )));
        }
    }
    if let Some(p) = &t.port {
        if !matches!(p.parse::<u16>(), Ok(n) if n > 0) {
            return Err(Failure::new(format!(
                "host {}: '{p}' is not a port number (1 to 65535)",
                t.name
            )));
        }
    }
    Ok(())
}

/// `ansible-inventory --list`: groups, their children and the hosts' variables.
struct Inventory {
    list: Value,
}

impl Inventory {
    fn load(file: Option<&Path>) -> Result<Inventory, Failure> {
        let mut cmd = std::process::Command::new("ansible-inventory");
        cmd.arg("--list");
        if let Some(f) = file {
            cmd.arg("-i").arg(f);
        }
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| {
                Failure::new(format!(
                    "@GROUP names need Ansible's ansible-inventory, which cannot run: {e}"
                ))
            })?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(Failure::new(format!(
                "ansible-inventory could not read the inventory: {}",
                why.lines().last().unwrap_or("no reason given").trim()
            )));
        }
        let list = serde_json::from_slice(&out.stdout).map_err(|e| {
            Failure::new(format!(
                "ansible-inventory printed no inventory I can read: {e}"
            ))
        })?;
        Ok(Inventory { list })
    }

    /// The hosts of `group` and of its children, in the inventory's order.
    fn group(&self, group: &str) -> Result<Vec<Target>, Failure> {
        if self.list.get(group).is_none() {
            return Err(Failure::new(format!(
                "the Ansible inventory has no group '{group}'"
            )));
        }
        let mut names = Vec::new();
        let mut seen = BTreeSet::new();
        self.collect(group, &mut names, &mut seen);
        Ok(names.iter().map(|n| self.target(n)).collect())
    }

    fn collect(&self, group: &str, names: &mut Vec<String>, seen: &mut BTreeSet<String>) {
        if !seen.insert(group.to_string()) {
            return;
        }
        let strings = |key: &str| -> Vec<String> {
            self.list[group][key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        for h in strings("hosts") {
            if !names.contains(&h) {
                names.push(h);
            }
        }
        for child in strings("children") {
            self.collect(&child, names, seen);
        }
    }

    /// How ssh reaches inventory host `name`: its ansible_host, ansible_user, ansible_port.
    fn target(&self, name: &str) -> Target {
        let vars = &self.list["_meta"]["hostvars"][name];
        let var = |k: &str| match &vars[k] {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let host = var("ansible_host").unwrap_or_else(|| name.to_string());
        let dest = match var("ansible_user") {
            Some(user) => format!("{user}@{host}"),
            None => host,
        };
        Target {
            name: name.to_string(),
            dest,
            port: var("ansible_port"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_file_gives_one_host_a_line_without_comments() {
        let text = "# fleet\nh1\n  h2   # the second\n\nroot@h3 extra\n";
        assert_eq!(file_entries(text), ["h1", "h2", "root@h3"]);
    }

    #[test]
    fn entries_are_unique_and_options_are_refused() {
        let t = targets(Some("h1, h2,h1,,"), None, None).unwrap();
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["h1", "h2"]);
        assert!(targets(Some("-oProxyCommand=x"), None, None).is_err());
        assert!(targets(Some("h1;reboot"), None, None).is_err());
        assert!(targets(Some(" , "), None, None).is_err());
    }

    #[test]
    fn only_keeps_the_named_hosts_and_refuses_others() {
        let all = targets(Some("h1,h2,h3"), None, None).unwrap();
        let names = |t: &[Target]| t.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&only(all.clone(), "h3, h1").unwrap()), ["h1", "h3"]);
        assert!(only(all.clone(), "h4").is_err());
        assert!(only(all, " ,").is_err());
    }

    #[test]
    fn inventory_groups_take_children_and_connection_variables() {
        let list = serde_json::json!({
            "_meta": {"hostvars": {
                "db1": {"ansible_host": "10.0.0.1", "ansible_user": "root", "ansible_port": 2222},
                "web1": {}
            }},
            "all": {"children": ["ungrouped", "prod"]},
            "prod": {"children": ["db", "web"]},
            "db": {"hosts": ["db1"]},
            "web": {"hosts": ["web1", "db1"]}
        });
        let inv = Inventory { list };
        let t = inv.group("all").unwrap();
        assert_eq!(
            t,
            [
                Target {
                    name: "db1".into(),
                    dest: "root@10.0.0.1".into(),
                    port: Some("2222".into())
                },
                Target::plain("web1"),
            ]
        );
        assert!(inv.group("nosuch").is_err());
    }
}
