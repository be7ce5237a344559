//! Resident memory and CPU time of a process, read from `/proc`, so the loadgen can report
//! the server's memory per connection and both sides' CPU without extra tools.

/// Clock ticks per second of `/proc/<pid>/stat` times. `USER_HZ` is 100 on every Linux
/// architecture we run on (it is fixed by the kernel ABI, not `CONFIG_HZ`).
const USER_HZ: f64 = 100.0;

/// Resident set size of process `pid` in bytes, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| std::io::Error::other("no VmRSS"))?;
    Ok(kb * 1024)
}

/// User + system CPU seconds used so far by `pid` (`None`: this process).
pub fn cpu_seconds(pid: Option<u32>) -> std::io::Result<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path)?;
    parse_cpu_ticks(&stat)
        .map(|t| t as f64 / USER_HZ)
        .ok_or_else(|| std::io::Error::other("unreadable /proc stat"))
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime is field 14, i.e. the 12th item here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's CPU time so far, from the first line of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MachineTicks {
    /// Time the hypervisor ran something else while a vCPU of this machine wanted to run.
    pub steal: u64,
    /// All of it: user, nice, system, idle, iowait, irq, softirq, steal.
    pub total: u64,
}

impl MachineTicks {
    /// Share of the machine's CPU time between `before` and `self` that was stolen (0..=1).
    pub fn steal_share_since(&self, before: &MachineTicks) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        self.steal.saturating_sub(before.steal) as f64 / total as f64
    }
}

/// The machine's CPU ticks now.
pub fn machine_ticks() -> std::io::Result<MachineTicks> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    stat.lines()
        .next()
        .and_then(parse_machine_ticks)
        .ok_or_else(|| std::io::Error::other("unreadable /proc/stat"))
}

/// `cpu  user nice system idle iowait irq softirq steal …` (guest time is inside user).
fn parse_machine_ticks(line: &str) -> Option<MachineTicks> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    if values.len() < 8 {
        return None;
    }
    Some(MachineTicks {
        steal: values[7],
        total: values.iter().sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name() {
        let line = "42 (odd) name)) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0";
        assert_eq!(parse_cpu_ticks(line), Some(280));
    }

    #[test]
    fn steal_is_the_eighth_value_of_the_cpu_line() {
        let before = parse_machine_ticks("cpu  100 0 50 800 10 0 5 35 0 0").unwrap();
        assert_eq!(before, MachineTicks { steal: 35, total: 1000 });
        let after = parse_machine_ticks("cpu  200 0 100 1500 10 0 5 185 0 0").unwrap();
        assert!((after.steal_share_since(&before) - 0.15).abs() < 1e-9);
        assert_eq!(parse_machine_ticks("cpu0 1 2 3 4 5 6 7 8"), None);
        assert!(machine_ticks().is_ok());
    }

    #[test]
    fn own_cpu_and_memory_are_readable() {
        assert!(cpu_seconds(None).unwrap() >= 0.0);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
