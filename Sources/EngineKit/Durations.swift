/// Durations as every engine takes them: whole seconds ("3600") or a number with one unit — "90s",
/// "15m", "24h", "30d". No signs, no fractions, no combinations, no leading zeros; at most 100 years.
public enum Durations {
    public static let maximumSeconds: Int64 = 100 * 365 * 86_400

    /// Seconds, or an `invalid` error naming the text.
    public static func seconds(_ text: String) throws -> Int64 {
        var digits = Substring(text)
        var unit: Int64 = 1
        if let last = text.last, !last.isNumber {
            switch last {
            case "s": unit = 1
            case "m": unit = 60
            case "h": unit = 3_600
            case "d": unit = 86_400
            default: throw EngineError.invalid("duration \(text) has an unknown unit; use s, m, h or d")
            }
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
              digits.count == 1 || digits.first != "0", digits.count <= 12, let value = Int64(digits)
        else { throw EngineError.invalid("duration \(text) is not a whole number with an optional unit (90s, 15m, 24h, 30d)") }
        let (total, overflow) = value.multipliedReportingOverflow(by: unit)
        guard !overflow, total <= maximumSeconds else { throw EngineError.invalid("duration \(text) is too long") }
        return total
    }
}
