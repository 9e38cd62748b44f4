/// One place in a Llama-style block where a per-channel scale can move between a producer and the
/// projections that read its output without changing the float model: the four of AWQ and SmoothQuant.
struct ScalingSite {
    enum Producer {
        /// An RMSNorm weight: x = norm(h)·g, so g / s gives x / s.
        case norm(String)
        /// The rows of a projection (and its bias): attn_v for attn_output, ffn_up for ffn_down
        /// (down reads silu(gate)·up, linear in up's rows).
        case rows(weight: String, bias: String)
    }

    let producer: Producer
    /// The projections reading the scaled channels (their columns multiply by s).
    let consumers: [String]
    /// The tensor whose recorded input Hessian the consumers share.
    let input: String
    /// Scale channels: the consumers' columns, or for attn_output under GQA the rows of attn_v.
    let channels: Int
    /// Consumer column → scale channel; nil is the identity. attn_output's column h·d+i reads attn_v's
    /// row (h / group)·d+i, so every query head of a KV group shares the scale of its channel.
    let channelOfColumn: [Int]?
    /// Consumers whose blocks AWQ's clipping search may clip (not attn_q / attn_k, as AWQ: their
    /// errors pass through the softmax, where the output error does not measure them).
    let clippable: [String]

    /// The four sites of layer `layer`: attn_norm → q/k/v, attn_v → attn_output, ffn_norm → gate/up,
    /// ffn_up → ffn_down.
    static func sites(layer: Int, config: ModelConfig) -> [ScalingSite] {
        func name(_ role: ProjectionRole) -> String { role.tensorName(layer: layer) }
        let group = config.headCount / config.kvHeadCount, d = config.headDim
        let valueChannel = (0..<config.queryWidth).map { column in (column / d / group) * d + column % d }
        return [
            ScalingSite(producer: .norm("blk.\(layer).attn_norm.weight"), consumers: [name(.query), name(.key), name(.value)],
                        input: name(.query), channels: config.hiddenSize, channelOfColumn: nil, clippable: [name(.value)]),
            ScalingSite(producer: .rows(weight: name(.value), bias: "blk.\(layer).attn_v.bias"), consumers: [name(.attentionOutput)],
                        input: name(.attentionOutput), channels: config.kvWidth, channelOfColumn: group == 1 ? nil : valueChannel,
                        clippable: [name(.attentionOutput)]),
            ScalingSite(producer: .norm("blk.\(layer).ffn_norm.weight"), consumers: [name(.gate), name(.up)],
                        input: name(.gate), channels: config.hiddenSize, channelOfColumn: nil, clippable: [name(.gate), name(.up)]),
            ScalingSite(producer: .rows(weight: name(.up), bias: "blk.\(layer).ffn_up.bias"), consumers: [name(.down)],
                        input: name(.down), channels: config.intermediateSize, channelOfColumn: nil, clippable: [name(.down)]),
        ]
    }

    /// A per-channel vector spread over the consumers' columns.
    func expand(_ perChannel: [Float]) -> [Float] {
        guard let channelOfColumn else { return perChannel }
        return channelOfColumn.map { perChannel[$0] }
    }

    /// A per-column statistic gathered per channel: the mean (`max == false`) or the max over the
    /// columns of each channel.
    func gather(_ perColumn: [Float], max useMax: Bool) -> [Float] {
        guard let channelOfColumn else { return perColumn }
        var values = [Float](repeating: 0, count: channels), counts = [Int](repeating: 0, count: channels)
        for (column, channel) in channelOfColumn.enumerated() {
            values[channel] = useMax ? Swift.max(values[channel], perColumn[column]) : values[channel] + perColumn[column]
            counts[channel] += 1
        }
        return useMax ? values : zip(values, counts).map { $0 / Float(Swift.max($1, 1)) }
    }
}
