import ArgumentParser
import ConnectorCore
import Foundation
import Policy
import Reconciler
import Reports

/// `tether validate`
struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check every policy file of a revision and print every problem as FILE:LINE:COLUMN: message.",
        discussion: """
            Checks YAML syntax, fields (with a did-you-mean for unknown ones), types, ranges, unique
            policy names, that each serverCertificate exists in the same commit and is a certificate,
            and that no two policies of equal priority that could select one device disagree.
            Client containers live on devices, so `plan` checks them, not `validate`.
            Exit 0 when valid, 1 when not.
            """)

    @OptionGroup var source: SourceOptions

    func run() throws {
        let revision = try source.revision()
        let problems = revision.validate()
        if !problems.isEmpty { throw PolicyProblems(problems) }
        let count = revision.policySet.policies.count
        Console.out("Valid: \(count) polic\(count == 1 ? "y" : "ies") in \(revision.fileCount) file\(revision.fileCount == 1 ? "" : "s") at revision \(revision.commit.id.prefix(12)) (\(source.path)/).")
    }
}

/// What plan, apply and drift share: read the revision, resolve it for this device, compare.
struct Comparison {
    let revision: PolicyRevision
    let labels: [String: String]
    let desired: ResolvedDesiredState
    let agent: Agent
    let plan: Plan

    init(_ source: SourceOptions) throws {
        revision = try source.revision()
        try revision.requireValid()
        labels = try source.device.deviceLabels()
        let state = try revision.policySet.desiredState(labels: labels)
        desired = try Reconciler.resolve(state, revision: revision, deviceDirectory: source.device.stateDirectoryURL)
        agent = try source.device.agent()
        plan = try Reconciler.plan(desired: desired, actual: agent.state())
    }

    func render(_ report: Report, format: ReportFormat) {
        switch format {
        case .text: Console.out(TextReport(colour: Console.current.isTerminal).render(report))
        case .json: Console.out(JSONReport.render(report))
        }
    }
}

/// `tether plan`
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show what apply would change on this agent, in the order it would change it.",
        discussion: "Exit 0 when there is nothing to do, 2 when there are changes, 1 on error (like terraform plan -detailed-exitcode).")

    @OptionGroup var source: SourceOptions

    @Option(help: "Output format: text for people, json for tools.")
    var format: ReportFormat = .text

    func run() throws {
        let comparison = try Comparison(source)
        comparison.render(Report(kind: .plan, revision: comparison.revision, labels: comparison.labels,
                                 desired: comparison.desired, plan: comparison.plan), format: format)
        if !comparison.plan.isEmpty { throw ExitCode(2) }
    }
}

/// `tether apply`
struct ApplyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Make the agent match the revision: every change in one transaction, or none.",
        discussion: "Exit 0 when applied (or nothing to do), 1 on error; after an error the agent is exactly as it was.")

    @OptionGroup var source: SourceOptions

    @Option(help: "Output format: text for people, json for tools.")
    var format: ReportFormat = .text

    func run() throws {
        let comparison = try Comparison(source)
        let plan = comparison.plan
        if !plan.isEmpty {
            do {
                try plan.apply(to: comparison.agent, actor: "tether apply \(comparison.revision.commit.id.prefix(12))")
            } catch {
                throw CommandError("error: apply failed, nothing was changed: \(error)")
            }
        }
        comparison.render(Report(kind: .apply, revision: comparison.revision, labels: comparison.labels,
                                 desired: comparison.desired, plan: plan, applied: !plan.isEmpty), format: format)
    }
}

/// `tether drift`
struct DriftCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drift",
        abstract: "Report every managed setting where the agent differs from the revision, and who changed it when.",
        discussion: "Exit 0 when in sync, 2 when anything drifted, 1 on error.")

    @OptionGroup var source: SourceOptions

    @Option(help: "Output format: text for people, json for tools.")
    var format: ReportFormat = .text

    func run() throws {
        let comparison = try Comparison(source)
        comparison.render(Report(kind: .drift, revision: comparison.revision, labels: comparison.labels,
                                 desired: comparison.desired, plan: comparison.plan), format: format)
        if !comparison.plan.findings.isEmpty { throw ExitCode(2) }
    }
}
