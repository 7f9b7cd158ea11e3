import ArgumentParser
import Policy
import Reports

/// `tether schema`
struct SchemaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schema",
        abstract: "Print the JSON Schema of IntegrationPolicy files (for editors and CI linters).",
        discussion: "The same schema is committed as policies/integration-policy.schema.json.")

    func run() throws {
        Console.out(JSONReport.serialize(PolicySchema.document))
    }
}
