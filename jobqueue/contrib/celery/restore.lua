-- restore: put back into their queue, in one step, the messages take.lua took longer ago
-- than the visibility timeout and nobody acknowledged (their bridge was killed): the
-- inverse of take, for the bridge's own queues. Entries kombu's own consumers wrote are
-- left to kombu's restore.
-- KEYS[1..n-2]: the queues' lists, queue after queue, one list per priority step (ARGV[3..])
-- KEYS[n-1]: kombu's unacked hash (delivery tag -> [message, exchange, routing key])
-- KEYS[n]: kombu's unacked index (sorted set: delivery tag -> time taken)
-- ARGV[1]: put back what was taken at or before this time (seconds)
-- ARGV[2]: s, the number of priority steps of each queue
-- ARGV[3..2+s]: the steps, ascending (kombu's priority_steps)
-- ARGV[3+s..]: the queues' names (their messages' routing keys), in the order of KEYS
-- Returns how many messages went back.
local unacked, index = KEYS[#KEYS - 1], KEYS[#KEYS]
local nsteps = tonumber(ARGV[2])
local steps, queues = {}, {}
for j = 1, nsteps do
  steps[j] = tonumber(ARGV[2 + j])
end
for i = 3 + nsteps, #ARGV do
  queues[ARGV[i]] = i - 2 - nsteps
end
local restored = 0
for _, tag in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', ARGV[1])) do
  local entry = redis.call('HGET', unacked, tag)
  local ok, parts = false, nil
  if entry then
    ok, parts = pcall(cjson.decode, entry)
  end
  local q = ok and type(parts) == 'table' and type(parts[3]) == 'string' and queues[parts[3]]
  if q and type(parts[2]) == 'string' then
    -- take.lua wrote '[' .. message .. ',' .. exchange .. ',' .. routing key .. ']': cut the
    -- message's own text back out, unchanged.
    local tail = ',' .. cjson.encode(parts[2]) .. ',' .. cjson.encode(parts[3]) .. ']'
    if string.sub(entry, 1, 1) == '[' and string.sub(entry, -#tail) == tail then
      local props = type(parts[1]) == 'table' and parts[1].properties
      local priority = type(props) == 'table' and tonumber(props.priority) or 0
      local step = 1
      for j = 1, nsteps do
        if steps[j] <= priority then
          step = j
        end
      end
      redis.call('RPUSH', KEYS[(q - 1) * nsteps + step], string.sub(entry, 2, #entry - #tail))
      redis.call('HDEL', unacked, tag)
      redis.call('ZREM', index, tag)
      restored = restored + 1
    end
  end
end
return restored
