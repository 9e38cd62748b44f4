import PivotKernels

/// llama.cpp's file types and which type each tensor gets in them (`llama_tensor_get_type` in
/// llama-quant.cpp, for dense Llama-family models): the "mixes" Q3_K_M, Q4_K_M, ... give the value
/// projection, the FFN down projection and the attention output more bits in chosen layers, and the
/// output head (or the tied embedding) Q6_K; any K-quant on rows that are not whole super-blocks
/// then falls back to a block-32 type.
public struct QuantizeFileType: Sendable, Equatable {
    public let name: String
    /// `general.file_type` (llama_ftype).
    public let llamaFileType: Int
    /// The type of most projections; nil: F16 or F32 (see `floatType`).
    public let base: BlockFormat?
    /// What projections become in an unquantized file type.
    public var floatType: TensorType { name == "F32" ? .f32 : name == "BF16" ? .bf16 : .f16 }

    public static let all: [QuantizeFileType] = [
        .init(name: "F32", llamaFileType: 0, base: nil), .init(name: "F16", llamaFileType: 1, base: nil), .init(name: "BF16", llamaFileType: 32, base: nil), .init(name: "Q4_0", llamaFileType: 2, base: .q4_0),
        .init(name: "Q4_1", llamaFileType: 3, base: .q4_1), .init(name: "Q8_0", llamaFileType: 7, base: .q8_0),
        .init(name: "Q5_0", llamaFileType: 8, base: .q5_0), .init(name: "Q5_1", llamaFileType: 9, base: .q5_1),
        .init(name: "Q2_K", llamaFileType: 10, base: .q2_K), .init(name: "Q3_K_S", llamaFileType: 11, base: .q3_K),
        .init(name: "Q3_K_M", llamaFileType: 12, base: .q3_K), .init(name: "Q3_K_L", llamaFileType: 13, base: .q3_K),
        .init(name: "Q4_K_S", llamaFileType: 14, base: .q4_K), .init(name: "Q4_K_M", llamaFileType: 15, base: .q4_K),
        .init(name: "Q5_K_S", llamaFileType: 16, base: .q5_K), .init(name: "Q5_K_M", llamaFileType: 17, base: .q5_K),
        .init(name: "Q6_K", llamaFileType: 18, base: .q6_K),
    ] + BlockFormat.extensionFormats.map { .init(name: $0.name, llamaFileType: Int($0.ggmlType), base: $0) }

    /// Pivot's group-wise types (`general.file_type` = the type id; only Pivot runs these files).
    public var isExtension: Bool { base?.isExtension ?? false }

    /// What `format` becomes on rows of `columns` weights (llama.cpp's K-quant fallbacks; a group-wise
    /// type keeps its bits in a group that divides the row).
    public static func fallback(_ format: BlockFormat, columns: Int) -> BlockFormat { QuantizeRecipe.fallback(format, columns: columns) }

    /// A name as llama-quantize takes it (Q3_K, Q4_K, Q5_K are its aliases of the _M mixes).
    public static func named(_ name: String) -> QuantizeFileType? {
        let aliases = ["q3_k": "q3_k_m", "q4_k": "q4_k_m", "q5_k": "q5_k_m"]
        let key = aliases[name.lowercased()] ?? name.lowercased()
        return all.first { $0.name.lowercased() == key }
    }
}

/// The per-tensor decision, given what llama.cpp looks at: the tensor's role, its layer, the number
/// of layers, the GQA ratio, and whether an importance matrix is used.
struct QuantizeRecipe {
    let fileType: QuantizeFileType
    let layers: Int
    /// Query heads per KV head.
    let gqa: Int
    let hasImportance: Bool
    let tiedEmbedding: Bool
    /// llama-quantize's --pure: every quantizable tensor gets the base type (no mix, no output rule).
    var pure = false

    enum Role { case output, tokenEmbedding, attentionV, attentionOutput, ffnDown, other }

    static func role(of name: String, tiedEmbedding: Bool) -> Role {
        if name == "output.weight" || (tiedEmbedding && name == "token_embd.weight") { return .output }
        if name == "token_embd.weight" { return .tokenEmbedding }
        if name.hasSuffix("attn_v.weight") { return .attentionV }
        if name.hasSuffix("attn_output.weight") { return .attentionOutput }
        if name.hasSuffix("ffn_down.weight") { return .ffnDown }
        return .other
    }

    /// llama.cpp's "more bits here" layers: the first and last eighth, and every third in between.
    static func useMoreBits(_ layer: Int, _ layers: Int) -> Bool {
        layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
    }

    /// The type for a 2-D tensor of `columns` columns; `layer` counts tensors of the same role so
    /// far, which is the layer index because llama.cpp visits tensors in layer order.
    func format(for name: String, columns: Int, layer: Int) -> BlockFormat? {
        guard let base = fileType.base else { return nil }
        var chosen = base
        let n = fileType.name
        if pure { return Self.fallback(chosen, columns: columns) }
        switch Self.role(of: name, tiedEmbedding: tiedEmbedding) {
        case .output:
            chosen = columns % base.elementsPerBlock != 0 || base == .q8_0 ? .q8_0 : .q6_K
        case .tokenEmbedding, .other:
            break
        case .attentionV:
            switch n {
            case "Q2_K": chosen = gqa >= 4 ? .q4_K : .q3_K
            case "Q3_K_M": chosen = layer < 2 ? .q5_K : .q4_K
            case "Q3_K_L": chosen = .q5_K
            case "Q4_K_M", "Q5_K_M": if Self.useMoreBits(layer, layers) { chosen = .q6_K }
            case "Q4_K_S": if layer < 4 { chosen = .q5_K }
            default: break
            }
        case .ffnDown:
            switch n {
            case "Q2_K": chosen = .q3_K
            case "Q3_K_M": chosen = layer < layers / 16 ? .q5_K : .q4_K
            case "Q3_K_L": chosen = .q5_K
            case "Q4_K_M", "Q5_K_M": if Self.useMoreBits(layer, layers) { chosen = .q6_K }
            case "Q4_K_S": if layer < layers / 8 { chosen = .q5_K }
            case "Q4_0", "Q5_0": if hasImportance && layer < layers / 8 { chosen = base == .q4_0 ? .q4_1 : .q5_1 }
            default: break
            }
        case .attentionOutput:
            switch n {
            case "Q2_K": chosen = .q3_K
            case "Q3_K_M": chosen = .q4_K
            case "Q3_K_L": chosen = .q5_K
            default: break
            }
        }
        return Self.fallback(chosen, columns: columns)
    }

    /// K-quants on rows that are not whole super-blocks become the block-32 type llama.cpp uses instead;
    /// a group-wise type whose group does not divide the row, the same bits in the largest group that does.
    static func fallback(_ format: BlockFormat, columns: Int) -> BlockFormat {
        if let bits = format.groupBits, columns % format.elementsPerBlock != 0 {
            return [128, 64, 32].lazy.compactMap { columns % $0 == 0 ? BlockFormat.grouped(bits: bits, group: $0) : nil }.first
                ?? (bits == 4 && columns % 32 == 0 ? .q4_1 : .q8_0)
        }
        guard format.isKQuant, columns % 256 != 0 else { return format }
        switch format {
        case .q2_K, .q3_K: return .q4_0
        case .q4_K: return .q5_0
        case .q5_K: return .q5_1
        default: return .q8_0
        }
    }
}
