import MetacryptCrypto
import Testing

@Suite("Random integers")
struct RandomTests {
    @Test func boundedRandomIntegersStayBelowTheBoundAndCoverIt() {
        #expect(randomUInt64(below: 1) == 0)
        var seen = Set<UInt64>()
        for _ in 0..<2000 {
            let value = randomUInt64(below: 7)
            #expect(value < 7)
            seen.insert(value)
        }
        #expect(seen.count == 7)
        // A bound just above 2^63 rejects almost half of all draws; it must still terminate and stay in range.
        let large = UInt64(1) << 63 + 1
        for _ in 0..<100 { #expect(randomUInt64(below: large) < large) }
    }
}
