# frozen_string_literal: true

# Which commit this node deploys in the staged rollout (docs/operators.md), decided from what the nodes
# record, before anything moves:
#
# * a node that leads (no `follows`) deploys `revision` of its checkout (HEAD: the newest publish);
# * a node that follows another deploys the revision that node has run healthily for at least `hold`
#   seconds, by the record it published in `records` (<node>.json); until there is one, it keeps
#   what it runs;
# * either way, a revision that failed its checks on this node (its state file's bad list) or on the
#   node it follows is never deployed: the last revision healthy here is, and without one nothing is.
#
# Returns {revision => the full commit name, keep => the commits whose unpacked out/ to keep (this one,
# and the last healthy one to go back to)}; fails the catalog with the reason when there is nothing
# to deploy.
require 'json'

Puppet::Functions.create_function(:'mailgw::rollout_revision') do
  dispatch :rollout_revision do
    param 'Struct[{
      source => String[1],
      revision => String[1],
      state => String[1],
      records => String[1],
      follows => Optional[String[1]],
      hold => Integer[0],
    }]', :options
    return_type 'Struct[{revision => String[40, 40], keep => Array[String[1]]}]'
  end

  def read(path)
    JSON.parse(File.read(path))
  rescue Errno::ENOENT
    {}
  rescue JSON::ParserError => e
    raise Puppet::Error, "mailgw: #{path} is not JSON (#{e.message.lines.first.strip}); nothing deployed"
  end

  def commit(source, revision)
    output = Puppet::Util::Execution.execute(
      ['git', '-C', source, 'rev-parse', '--verify', '--quiet', "#{revision}^{commit}"],
      failonfail: false, combine: false, stdinfile: '/dev/null'
    )
    raise Puppet::Error, "mailgw: '#{revision}' is not a commit of the checkout of #{source}; nothing deployed" \
      unless output.exitstatus.zero?

    output.strip
  end

  def rollout_revision(options)
    state = read(options['state'])
    revision = choose(options, state)
    { 'revision' => revision, 'keep' => [revision, state['last_healthy']].compact.uniq }
  end

  def choose(options, state)
    bad = state['bad'] || []
    current = state['last_healthy']
    if options['follows']
      leader = options['follows']
      ahead = read(File.join(options['records'], "#{leader}.json"))
      bad += ahead['bad'] || []
      held = Time.now.to_i - ahead['since'].to_i
      candidate = ahead['revision'] if ahead['status'] == 'healthy' && held >= options['hold']
      candidate ||= current
      unless candidate
        raise Puppet::Error, "mailgw: #{leader} has run no revision healthily for #{options['hold']} s yet, and " \
                             'this node has none of its own: nothing deployed until it has'
      end
    else
      candidate = commit(options['source'], options['revision'])
    end
    return candidate unless bad.include?(candidate)

    unless current && !bad.include?(current)
      raise Puppet::Error, "mailgw: revision #{candidate} failed its checks, and this node has run no other " \
                           'revision healthily to go back to: nothing deployed'
    end
    Puppet.warning("mailgw: revision #{candidate} failed its checks; this node deploys #{current}, " \
                   'the last revision that was healthy here')
    current
  end
end
