# An absolute path on the MX node.
type Mailgw::Absolutepath = Pattern[/\A\/[^\n]*\z/]
