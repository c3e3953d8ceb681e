# The staged rollout on one MX node: its health checks, and the record of what it runs and how that went.
# Usage: ruby rollout.rb healthy|check|gate SETTINGS [-- COMMAND...]
#
#   healthy  exit 0 when the state file says this node is healthy at the revision and the services answer
#            now, at the first try (Puppet's `unless`: a run that finds it so changes nothing); the files
#            did not change since `postfix check` passed them, so it is not run again
#   check    run the checks and record the result: healthy (since now, unless it already was), or, right
#            after the revision was deployed, failed: the revision goes on the node's bad list and the next
#            run puts the last healthy one back; on a later run, unhealthy (the hold starts again). Exit 1
#            on a failure, with every failed check on stderr.
#   gate     run COMMAND (the check of a new main.cf and master.cf before they are deployed), then wait
#            for the milter (retried like the check's): Rspamd, reloaded just before, binds the socket
#            main.cf names once it has re-read its configuration. When either fails, the revision failed
#            on this node as above, and the new main.cf is not deployed
#
# SETTINGS is a JSON file of one object: state (the node's state file), node (its name), revision (the commit
# deployed), records (the directory its record is written to for the nodes that follow it),
# postfix_check (a command run with MAIL_CONFIG=postfix_config), smtp (host:port of the node's own
# smtpd), recipients (the deployed relay_recipients map: a declared address of a list domain must be
# accepted at RCPT TO, an unknown one of the same domain refused), rspamd_url (GET must answer 'pong'),
# milter (true: every milter of smtpd_milters, read with the postconf command from postfix_config, or, in
# the gate, from the candidate's MAIL_CONFIG, must answer the milter protocol's option negotiation),
# ldap_command (must exit 0), settle and timeout (seconds).
#
# The state file (and the record, the same JSON): {node, revision, status: healthy|unhealthy|failed,
# since (epoch seconds), last_healthy, bad: [...]}.
require 'fileutils'
require 'json'
require 'net/http'
require 'open3'
require 'securerandom'
require 'socket'
require 'timeout'

# A check that may pass a moment later: the service restarting after its reload.
class Transient < StandardError; end

def read_state(settings)
  JSON.parse(File.read(settings['state']))
rescue Errno::ENOENT
  {}
end

# Written to a temporary name and renamed: a reader never sees half of it.
def write_json(path, data)
  FileUtils.mkdir_p(File.dirname(path))
  temporary = "#{path}.#{Process.pid}.tmp"
  File.write(temporary, JSON.pretty_generate(data) + "\n")
  File.rename(temporary, path)
end

def record(settings, state)
  write_json(settings['state'], state)
  records = settings['records']
  write_json(File.join(records, "#{settings['node']}.json"), state) if records
end

def run_command(command, env = {})
  output, status = Open3.capture2e(env, *command)
  raise "#{command.join(' ')} exited #{status.exitstatus}: #{output.strip.lines.last(3).join(' ').strip}" \
    unless status.success?
end

# --- the checks --------------------------------------------------------------------------------------

def reply(io)
  lines = []
  loop do
    line = io.gets
    raise Transient, 'the connection closed' if line.nil?

    lines << line.chomp
    break unless line[3] == '-'
  end
  [lines.last[0, 3].to_i, lines.join(' | ')]
end

def command(io, line)
  io.write("#{line}\r\n")
  reply(io)
end

# A declared address of a domain whose list is exhaustive (not '@domain verify'), and an unknown one there.
def probe_addresses(map)
  lines = File.readlines(map, chomp: true).reject { |l| l.start_with?('#') || l.strip.empty? }
  verify = lines.filter_map { |l| l.split("\t").first[1..] if l.start_with?('@') }
  known = lines.map { |l| l.split("\t").first }.find do |key|
    !key.start_with?('@') && key.include?('@') && !verify.include?(key.split('@').last)
  end
  raise "#{map} lists no address of a domain with an exhaustive list to probe" unless known

  [known, "mailgw-health-#{SecureRandom.hex(6)}@#{known.split('@').last}"]
end

def smtp_check(settings)
  host, _, port = settings['smtp'].rpartition(':')
  known, unknown = probe_addresses(settings['recipients'])
  Timeout.timeout(20) do
    socket = TCPSocket.new(host.delete('[]'), port.to_i)
    begin
      code, text = reply(socket)
      raise Transient, "banner: #{text}" if code != 220

      code, text = command(socket, 'EHLO mailgw-health.invalid')
      raise "EHLO: #{text}" if code != 250

      { known => 2, unknown => 5 }.each do |rcpt, want|
        code, text = command(socket, 'MAIL FROM:<>')
        raise Transient, "MAIL FROM: #{text}" if code / 100 == 4
        raise "MAIL FROM:<>: #{text}" if code != 250

        code, text = command(socket, "RCPT TO:<#{rcpt}>")
        raise Transient, "RCPT TO:<#{rcpt}>: #{text}" if code / 100 == 4
        raise "RCPT TO:<#{rcpt}> got #{text}, expected #{want}xx" if code / 100 != want

        command(socket, 'RSET')
      end
      command(socket, 'QUIT')
    ensure
      socket.close
    end
  end
rescue SystemCallError, Timeout::Error, IOError => e
  raise Transient, "SMTP on #{settings['smtp']}: #{e.message}"
end

def rspamd_check(url)
  answer = Net::HTTP.get_response(URI(url))
  raise "Rspamd at #{url} answered #{answer.code} #{answer.body.to_s.strip[0, 60]}" \
    unless answer.is_a?(Net::HTTPSuccess) && answer.body.to_s.include?('pong')
rescue SystemCallError, Timeout::Error, IOError => e
  raise Transient, "Rspamd at #{url}: #{e.message}"
end

# The milter protocol (version 6, as Postfix speaks it): a packet is a 4-byte big-endian length, then a command.
MILTER_VERSION = 6
MILTER_ACTIONS = 0x1FF # every action Postfix may allow a milter (SMFIF_*)
MILTER_PACKET_MAX = 65_536 # an option negotiation is 13 bytes and a few macro lists: more is not a milter

def milter_packet(command, data = '')
  [data.bytesize + 1].pack('N') + command + data
end

def milter_read(socket, count)
  data = socket.read(count)
  raise EOFError, 'the connection closed before the option negotiation' if data.nil? || data.bytesize < count

  data
end

# What else the peer sent at once, to name what answered.
def milter_rest(socket)
  return '' unless IO.select([socket], nil, nil, 0.5)

  more = socket.read_nonblock(60, exception: false)
  more.is_a?(String) ? more : ''
end

# The milters main.cf in DIRECTORY hands every message to: the live configuration's, or the candidate's.
def milter_addresses(settings, directory)
  command = [*settings.fetch('postconf', ['postconf']), '-c', directory, '-h', 'smtpd_milters']
  output, errors, status = Open3.capture3(*command)
  raise "#{command.join(' ')}: #{errors.strip}" unless status.success?

  output.split(/[\s,]+/).reject(&:empty?)
end

def milter_connect(address)
  case address
  when /\A(?:unix|local):(.+)\z/ then UNIXSocket.new(Regexp.last_match(1))
  when /\Ainet:\[?([^\[\]]+?)\]?:(\d+)\z/ then TCPSocket.new(Regexp.last_match(1), Regexp.last_match(2).to_i)
  else raise "#{address}: not a milter address this check knows (unix:PATH or inet:HOST:PORT)"
  end
end

# SMFIC_OPTNEG: the milter must answer with its own option negotiation ('O'), then SMFIC_QUIT ends the session.
def milter_answers(address)
  Timeout.timeout(10) do
    socket = milter_connect(address)
    begin
      socket.write(milter_packet('O', [MILTER_VERSION, MILTER_ACTIONS, 0].pack('N3')))
      head = milter_read(socket, 4)
      length = head.unpack1('N')
      answer = length.between?(1, MILTER_PACKET_MAX) ? head + milter_read(socket, length) : head + milter_rest(socket)
      unless answer[4] == 'O' && length >= 13 && length <= MILTER_PACKET_MAX
        raise "#{address} answered #{answer[0, 60].inspect}, not the milter protocol's option negotiation"
      end

      socket.write(milter_packet('Q'))
    ensure
      socket.close
    end
  end
rescue SystemCallError, Timeout::Error, IOError => e
  raise Transient, "#{address}: #{e.message}"
end

# Every milter that main.cf in DIRECTORY names (none: nothing to check).
def milter_check(settings, directory)
  milter_addresses(settings, directory).each { |address| milter_answers(address) }
end

CHECKS = {
  'postfix check' => lambda { |s|
    run_command(s['postfix_check'], 'MAIL_CONFIG' => s['postfix_config']) if s['postfix_check']
  },
  'smtp' => ->(s) { smtp_check(s) if s['smtp'] },
  'rspamd' => ->(s) { rspamd_check(s['rspamd_url']) if s['rspamd_url'] },
  'milter' => ->(s) { milter_check(s, s['postfix_config']) if s['milter'] },
  'ldap' => ->(s) { run_command(s['ldap_command']) if s['ldap_command'] },
}.freeze

# Every check, retried while it fails in a way a restarting service does, until the timeout: the failures.
def failures(settings, retrying: true, skip: [])
  deadline = retrying ? Time.now + settings.fetch('timeout', 60).to_f : Time.now
  CHECKS.reject { |name, _| skip.include?(name) }.filter_map do |name, check|
    begin
      check.call(settings)
      nil
    rescue Transient => e
      if Time.now < deadline
        sleep 1
        retry
      end
      "#{name}: #{e.message}"
    rescue StandardError => e
      "#{name}: #{e.message}"
    end
  end
end

# --- what a result means for the node's state ---------------------------------------------------------

def failed(settings, state, why)
  revision = settings['revision']
  state.merge(
    'node' => settings['node'], 'revision' => revision, 'status' => 'failed', 'since' => Time.now.to_i,
    'bad' => ((state['bad'] || []) + [revision]).uniq, 'why' => why
  )
end

def check(settings)
  state = read_state(settings)
  revision = settings['revision']
  deployed_now = state['revision'] != revision || state['status'] == 'failed'
  sleep settings.fetch('settle', 2).to_f if deployed_now # reloaded daemons pick up the new files
  problems = failures(settings)
  if problems.empty?
    since = state['revision'] == revision && state['status'] == 'healthy' ? state['since'] : Time.now.to_i
    record(settings, state.merge('node' => settings['node'], 'revision' => revision, 'status' => 'healthy',
                                 'since' => since, 'last_healthy' => revision).reject { |k, _| k == 'why' })
    puts "mailgw: revision #{revision} is healthy on #{settings['node']}"
    return 0
  end
  if deployed_now
    record(settings, failed(settings, state, problems))
    warn "mailgw: revision #{revision} failed its health checks right after it was deployed: the next run " \
         "puts back #{state['last_healthy'] || '(no healthy revision yet)'}"
  else
    record(settings, state.merge('status' => 'unhealthy', 'since' => Time.now.to_i, 'why' => problems))
    warn "mailgw: revision #{revision} is unhealthy on #{settings['node']} (the nodes that follow it wait)"
  end
  problems.each { |problem| warn "  #{problem}" }
  1
end

def healthy?(settings)
  state = read_state(settings)
  healthy = state['revision'] == settings['revision'] && state['status'] == 'healthy'
  healthy && failures(settings, retrying: false, skip: ['postfix check']).empty? ? 0 : 1
end

def gate(settings, command)
  if system(*command)
    # The new main.cf goes in only once the milters it names answer: no message is deferred for want of them.
    candidate = settings.merge('postfix_config' => ENV.fetch('MAIL_CONFIG', settings['postfix_config']))
    problems = failures(candidate, skip: CHECKS.keys - ['milter'])
    return 0 if problems.empty?

    status, shown = 1, problems
  else
    status = $?.exitstatus || 1 # nil: it could not be run at all
    problems, shown = ["#{command.first}: exited #{status}"], [] # the command said why itself
  end
  state = read_state(settings)
  record(settings, failed(settings, state, problems))
  warn "mailgw: revision #{settings['revision']} was refused by its check before it was deployed: the next run " \
       "puts back #{state['last_healthy'] || '(no healthy revision yet)'}"
  shown.each { |problem| warn "  #{problem}" }
  status
end

mode, path, separator, *rest = ARGV
settings = JSON.parse(File.read(path))
exit case mode
     when 'healthy' then healthy?(settings)
     when 'check' then check(settings)
     when 'gate' then separator == '--' ? gate(settings, rest) : 2
     else 2
     end
