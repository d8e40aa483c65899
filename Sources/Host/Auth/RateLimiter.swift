import Synchronization

/// Token buckets (audit #21): each key may spend `burst` at once and regains `rate` per second.
public final class RateLimiter: Sendable {
    public struct Limit: Codable, Sendable, Equatable {
        /// Requests per second regained; 0 disables the limit.
        public var rate: Double
        /// The most requests in a burst.
        public var burst: Double

        public init(rate: Double, burst: Double) {
            self.rate = rate
            self.burst = burst
        }
    }

    private struct Bucket {
        var tokens: Double
        var updated: Double
    }

    let limit: Limit
    let maxKeys: Int
    private let buckets = Locked<[String: Bucket]>([:])

    public init(limit: Limit, maxKeys: Int = 100_000) {
        self.limit = limit
        self.maxKeys = maxKeys
    }

    /// Spends one token for `key`. Nil if allowed; otherwise the seconds until one is available.
    public func take(_ key: String, now: Double) -> Double? {
        guard limit.rate > 0 else { return nil }
        return buckets.withLock { all in
            var bucket = all[key] ?? Bucket(tokens: limit.burst, updated: now)
            bucket.tokens = min(limit.burst, bucket.tokens + max(0, now - bucket.updated) * limit.rate)
            bucket.updated = now
            if bucket.tokens >= 1 {
                bucket.tokens -= 1
                if all[key] == nil && all.count >= maxKeys { Self.forgetFullBuckets(&all, limit: limit, now: now) }
                all[key] = bucket
                return nil
            }
            all[key] = bucket
            return (1 - bucket.tokens) / limit.rate
        }
    }

    /// A full bucket carries no information: forgetting it changes nothing. Keeps memory bounded.
    private static func forgetFullBuckets(_ all: inout [String: Bucket], limit: Limit, now: Double) {
        all = all.filter { min(limit.burst, $0.value.tokens + (now - $0.value.updated) * limit.rate) < limit.burst }
        if all.count >= 100_000 { all.removeAll() }
    }
}

/// Backs off unseal attempts after failures: the first three are free, then each further failure
/// doubles the wait, up to a minute. A success resets it.
public final class UnsealBackoff: Sendable {
    private let state = Locked<(failures: Int, notBefore: Double)>((0, 0))

    public init() {}

    /// Nil if an attempt may go ahead now; otherwise the seconds to wait.
    public func check(now: Double) -> Double? {
        state.withLock { s in s.notBefore > now ? s.notBefore - now : nil }
    }

    public func failed(now: Double) {
        state.withLock { s in
            s.failures += 1
            if s.failures > 3 {
                s.notBefore = now + min(60, Double(1 << min(s.failures - 4, 6)))
            }
        }
    }

    public func succeeded() { state.withLock { $0 = (0, 0) } }
}
