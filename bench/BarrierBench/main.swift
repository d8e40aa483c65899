import FoundationEssentials
import Glibc
import Host
import MetacryptCrypto

// Barrier figures for bench/run: get latency with many entries beside SQLite's own read of the same
// rows, and DEK re-encryption throughput beside raw AES-256-GCM. Prints one JSON object.
//
//   barrier-bench [--entries N] [--reads N] [--reencrypt-entries N] [--dir DIR]

func argument(_ name: String, _ fallback: Int) -> Int {
    let args = CommandLine.arguments
    guard let i = args.firstIndex(of: name), i + 1 < args.count, let v = Int(args[i + 1]) else { return fallback }
    return v
}

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func percentile(_ samples: [Double], _ p: Double) -> Double {
    let sorted = samples.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

let entryCount = argument("--entries", 1_000_000)
let readCount = argument("--reads", 100_000)
let reencryptCount = argument("--reencrypt-entries", 100_000)
var template = Array("/tmp/metacrypt-bench-XXXXXX".utf8CString)
let dir = String(cString: mkdtemp(&template)!)
defer { _ = system("rm -rf '\(dir)'") }

let storage = try SQLiteStorage(path: dir + "/bench.db")
let barrier = Barrier(storage: storage)
try barrier.initialize(password: SecureBytes(copying: Array("benchmark password".utf8)), parameters: .minimum)
try barrier.createKey("mount:bench")
try barrier.createKey("mount:rotate")

// Fill: 128-byte values in batches of 10,000 per transaction.
var started = now()
let small = [UInt8](repeating: 0x61, count: 128)
var i = 0
while i < entryCount {
    let batch = (i..<min(entryCount, i + 10_000)).map { (path: "engine/kv/bench/entries/\($0)", value: small) }
    try barrier.putMany(batch, keyID: "mount:bench")
    i += batch.count
}
let fillSeconds = now() - started

// Reads: random paths through the barrier, then the same rows read raw from SQLite.
var paths: [String] = []
for _ in 0..<readCount { paths.append("engine/kv/bench/entries/\(Int(randomUInt64(below: UInt64(entryCount))))") }
var barrierSamples: [Double] = []
var sqliteSamples: [Double] = []
for path in paths {
    let t0 = now()
    _ = try barrier.get(path)
    barrierSamples.append(now() - t0)
}
for path in paths {
    let t0 = now()
    _ = try storage.read { try $0.entry(path) }
    sqliteSamples.append(now() - t0)
}

// Re-encryption: 1 KiB values under their own key, rotate, move them all.
let large = [UInt8](repeating: 0x62, count: 1024)
i = 0
while i < reencryptCount {
    let batch = (i..<min(reencryptCount, i + 10_000)).map { (path: "engine/kv/rotate/\($0)", value: large) }
    try barrier.putMany(batch, keyID: "mount:rotate")
    i += batch.count
}
try barrier.rotateKey("mount:rotate")
started = now()
let moved = try barrier.reencrypt("mount:rotate", batchSize: 1_000)
let reencryptSeconds = now() - started

// Raw AES-256-GCM over the same bytes, one 1 KiB message at a time.
let key = SecureBytes(randomCount: 32)
started = now()
for _ in 0..<reencryptCount { _ = try AESGCM.seal(large, key: key, aad: [UInt8]()) }
let aesSeconds = now() - started

let result: [String: Double] = [
    "entries": Double(entryCount),
    "fill_seconds": fillSeconds,
    "barrier_get_p50_us": percentile(barrierSamples, 0.5) * 1e6,
    "barrier_get_p99_us": percentile(barrierSamples, 0.99) * 1e6,
    "sqlite_get_p50_us": percentile(sqliteSamples, 0.5) * 1e6,
    "sqlite_get_p99_us": percentile(sqliteSamples, 0.99) * 1e6,
    "reencrypt_entries": Double(moved),
    "reencrypt_mb_per_s": Double(moved * 1024) / reencryptSeconds / 1e6,
    "aes_gcm_mb_per_s": Double(reencryptCount * 1024) / aesSeconds / 1e6,
]
let encoder = JSONEncoder()
encoder.outputFormatting = [.sortedKeys]
print(String(decoding: try encoder.encode(result), as: UTF8.self))
