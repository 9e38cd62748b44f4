enum HuggingFaceLoader {
    static func load(directory: String) throws -> LoadedModel {
        throw PivotError.unsupported(file: directory, "HuggingFace folders are not wired yet")
    }
}
