# A command for exec: an argument vector (no shell involved) or a shell command line.
type Mailgw::Command = Variant[Array[String[1], 1], String[1]]
