import Glibc

/// RFC 3339 UTC timestamps with second precision ("2026-12-03T17:04:38Z"), formatted with gmtime_r:
/// the audit log writes two per request, and calendar-based formatting showed up in profiles.
func iso8601(_ seconds: Double) -> String {
    var time = time_t(seconds.rounded(.down))
    var parts = tm()
    gmtime_r(&time, &parts)
    func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
    return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T"
        + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec))Z"
}
