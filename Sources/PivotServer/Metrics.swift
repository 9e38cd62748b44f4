import Foundation
import Synchronization

/// The server's counters and latency histograms, rendered in Prometheus' text exposition format
/// (what llama-server and vLLM expose at /metrics). Gauges are read from the engine when scraped.
final class ServerMetrics: Sendable {
    /// Cumulative buckets as Prometheus wants them; bounds in seconds.
    struct Histogram {
        let bounds: [Double]
        private(set) var counts: [Int]
        private(set) var sum = 0.0
        private(set) var count = 0

        init(bounds: [Double]) {
            self.bounds = bounds
            counts = Array(repeating: 0, count: bounds.count)
        }

        mutating func observe(_ x: Double) {
            for (i, bound) in bounds.enumerated() where x <= bound { counts[i] += 1 }
            sum += x
            count += 1
        }
    }

    struct RequestKey: Hashable, Comparable {
        var endpoint: String
        var status: Int
        static func < (a: Self, b: Self) -> Bool { (a.endpoint, a.status) < (b.endpoint, b.status) }
    }

    private struct State {
        var requests: [RequestKey: Int] = [:]
        var promptTokens = 0
        var cachedPromptTokens = 0
        var generatedTokens = 0
        var preemptions = 0
        var firstToken = Histogram(bounds: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60])
        var interToken = Histogram(bounds: [0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5])
    }

    private let state = Mutex(State())

    func countRequest(endpoint: String, status: Int) {
        state.withLock { $0.requests[RequestKey(endpoint: endpoint, status: status), default: 0] += 1 }
    }

    func count(_ completion: Completion) {
        state.withLock {
            $0.promptTokens += completion.promptTokens
            $0.cachedPromptTokens += completion.cachedTokens
            $0.generatedTokens += completion.completionTokens
        }
    }

    func countPreemption() { state.withLock { $0.preemptions += 1 } }
    func observeFirstToken(_ seconds: Double) { state.withLock { $0.firstToken.observe(seconds) } }
    func observeInterToken(_ seconds: Double) { state.withLock { $0.interToken.observe(seconds) } }

    /// What the engine reports at scrape time.
    struct Gauges {
        var requestsWaiting: Int
        var slotsBusy: Int
        var slots: Int
        var requestsInFlight: Int
        var kvCacheBytes: Double
        var kvCacheCapacityBytes: Double
        var kvBudgetBytes: Double
        var kvBudgetUsedBytes: Double
        var sequencesResident: Int
    }

    func render(_ gauges: Gauges) -> String {
        let s = state.withLock { $0 }
        var out = PrometheusText()
        out.family("pivot_requests_total", "counter", "HTTP requests answered, by route and status.")
        for (key, value) in s.requests.sorted(by: { $0.key < $1.key }) {
            out.sample("pivot_requests_total", labels: [("endpoint", key.endpoint), ("status", String(key.status))], value: Double(value))
        }
        out.single("pivot_prompt_tokens_total", "counter", "Prompt tokens of completed generations (cached ones included).", Double(s.promptTokens))
        out.single("pivot_prompt_tokens_cached_total", "counter", "Prompt tokens found in a slot's cache and not computed again.", Double(s.cachedPromptTokens))
        out.single("pivot_generated_tokens_total", "counter", "Tokens generated.", Double(s.generatedTokens))
        out.single("pivot_preemptions_total", "counter", "Sequences whose KV cache was emptied under the KV budget, to be recomputed.", Double(s.preemptions))
        out.single("pivot_requests_waiting", "gauge", "Requests queued for a free slot.", Double(gauges.requestsWaiting))
        out.single("pivot_requests_in_flight", "gauge", "Requests being answered, queued ones included.", Double(gauges.requestsInFlight))
        out.single("pivot_slots_busy", "gauge", "Slots generating.", Double(gauges.slotsBusy))
        out.single("pivot_slots", "gauge", "Slots (--parallel).", Double(gauges.slots))
        out.single("pivot_kv_cache_bytes", "gauge", "KV cache bytes holding tokens, over every slot.", gauges.kvCacheBytes)
        out.single("pivot_kv_cache_capacity_bytes", "gauge", "KV cache bytes for every slot's full context.", gauges.kvCacheCapacityBytes)
        out.single("pivot_kv_budget_bytes", "gauge", "KV cache bytes the running requests' caches may hold together (--kv-budget).", gauges.kvBudgetBytes)
        out.single("pivot_sequences_resident", "gauge", "Requests whose KV cache is resident within the budget; other busy slots wait for memory.", Double(gauges.sequencesResident))
        out.single("pivot_kv_budget_used_bytes", "gauge", "KV cache bytes the running requests hold or are about to prefill, as the budget counts them.", gauges.kvBudgetUsedBytes)
        out.histogram("pivot_time_to_first_token_seconds", "From a request's arrival to its first generated token (queueing and prefill included).", s.firstToken)
        out.histogram("pivot_inter_token_latency_seconds", "Between consecutive generated tokens of one request.", s.interToken)
        return out.text
    }
}

/// Prometheus' text format, version 0.0.4: `# HELP`, `# TYPE`, then samples.
struct PrometheusText {
    private(set) var text = ""

    mutating func family(_ name: String, _ type: String, _ help: String) {
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    mutating func sample(_ name: String, labels: [(String, String)] = [], value: Double) {
        let labelText = labels.isEmpty ? "" : "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
        text += "\(name)\(labelText) \(Self.number(value))\n"
    }

    mutating func single(_ name: String, _ type: String, _ help: String, _ value: Double) {
        family(name, type, help)
        sample(name, value: value)
    }

    mutating func histogram(_ name: String, _ help: String, _ h: ServerMetrics.Histogram) {
        family(name, "histogram", help)
        for (bound, count) in zip(h.bounds, h.counts) { sample(name + "_bucket", labels: [("le", Self.number(bound))], value: Double(count)) }
        sample(name + "_bucket", labels: [("le", "+Inf")], value: Double(h.count))
        sample(name + "_sum", value: h.sum)
        sample(name + "_count", value: Double(h.count))
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    /// Integers without a fraction; others as Swift prints doubles (which Prometheus parses).
    static func number(_ x: Double) -> String {
        x == x.rounded() && abs(x) < 1e15 ? String(Int64(x)) : String(x)
    }
}
