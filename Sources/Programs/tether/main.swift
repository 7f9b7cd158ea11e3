import Foundation
import TetherCLI

exit(Tether.run(arguments: Array(CommandLine.arguments.dropFirst())))
