# frozen_string_literal: true

# Data as one line of JSON, for the settings the module hands its own scripts (files/rollout.rb).
require 'json'

Puppet::Functions.create_function(:'mailgw::json') do
  dispatch :json do
    param 'Data', :data
    return_type 'String'
  end

  def json(data)
    JSON.generate(data)
  end
end
