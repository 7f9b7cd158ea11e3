import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import TetherCLI

exit(Tether.run(arguments: Array(CommandLine.arguments.dropFirst())))
