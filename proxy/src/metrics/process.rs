//! The process's own health.

/// The process's own health, in the Prometheus client libraries' names:
/// resident memory, CPU time and file descriptors, read from `/proc` at
/// scrape time.
pub fn process() -> String {
    let (cpu, rss_kib) = common::procfs::own_usage();
    let (fds, max_fds) = common::procfs::own_fds();
    format!(
        "# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes {}
# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total {cpu}
# HELP process_open_fds Number of open file descriptors.
# TYPE process_open_fds gauge
process_open_fds {fds}
# HELP process_max_fds Maximum number of open file descriptors.
# TYPE process_max_fds gauge
process_max_fds {max_fds}
",
        rss_kib * 1024
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_reports_its_memory_and_descriptors() {
        let text = super::process();
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {text}"))
        };
        assert!(
            value("process_resident_memory_bytes") > 1_000_000.0,
            "{text}"
        );
        assert!(value("process_open_fds") >= 3.0, "{text}");
        assert!(
            value("process_max_fds") >= value("process_open_fds"),
            "{text}"
        );
        assert!(value("process_cpu_seconds_total") >= 0.0, "{text}");
    }
}
