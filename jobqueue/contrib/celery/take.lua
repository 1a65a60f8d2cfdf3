-- take: move up to ARGV[2] messages from a kombu Redis queue into kombu's unacked
-- bookkeeping in one step, so a consumer killed at any moment leaves every message it
-- took where kombu's restore (after the visibility timeout) finds it.
-- KEYS[1..n-2]: the queue's lists, the first taken from first (kombu's priority order)
-- KEYS[n-1]: kombu's unacked hash (delivery tag -> [message, exchange, routing key])
-- KEYS[n]: kombu's unacked index (sorted set: delivery tag -> time taken)
-- ARGV[1]: the time now, in seconds
-- ARGV[2]: the most messages to take
-- Returns the messages' JSON, as stored by kombu.
local limit = tonumber(ARGV[2])
local unacked, index = KEYS[#KEYS - 1], KEYS[#KEYS]
local taken = {}
for i = 1, #KEYS - 2 do
  while #taken < limit do
    local item = redis.call('RPOP', KEYS[i])
    if not item then
      break
    end
    local ok, message = pcall(cjson.decode, item)
    local props = ok and type(message) == 'table' and message.properties
    local tag = type(props) == 'table' and props.delivery_tag
    if type(tag) == 'string' then
      local info = type(props.delivery_info) == 'table' and props.delivery_info or {}
      local exchange = type(info.exchange) == 'string' and info.exchange or ''
      local key = type(info.routing_key) == 'string' and info.routing_key or ''
      -- The message's own text, unchanged: re-encoding it could turn [] into {}.
      redis.call('HSET', unacked, tag, '[' .. item .. ',' .. cjson.encode(exchange) .. ',' .. cjson.encode(key) .. ']')
      redis.call('ZADD', index, ARGV[1], tag)
    end
    taken[#taken + 1] = item
  end
end
return taken
