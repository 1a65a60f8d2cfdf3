-- include: keyed
-- Change the priority of a queued or scheduled job, as change_priority.lua does, and of a
-- keyed job waiting behind its key's first one (see flow_pop.lua): it keeps its place
-- within its priority, and takes the place of its key's job in the queue if it now beats it
-- (a key's job in the queue lowered below one waiting behind it changes places with it).
-- KEYS[1] queue      sorted set: job id -> (100 - priority) * 2^44 + sequence
-- KEYS[2] entities   hash: entity id -> job id
-- KEYS[3] scheduled  sorted set
-- KEYS[4] schedprio  hash: scheduled job id -> priority
-- KEYS[5] keyheads   hash: job key -> the id of its job in the queue
-- KEYS[6] keyof      hash: job id -> "<key>\t<score in hex>": its keyqueue entry, less the id
-- KEYS[7] keyqueue   sorted set (by text): "<key>\t<14 hex digits of the score><id>"
-- ARGV[1] job id, or "" to find it by entity id
-- ARGV[2] entity id (used when ARGV[1] is "")
-- ARGV[3] new priority (-100..100)
-- Returns the job id changed, or false if it is neither queued nor scheduled.
local SHIFT = 17592186044416
local id = ARGV[1]
if id == '' then
  id = redis.call('HGET', KEYS[2], ARGV[2])
  if not id then return false end
end
local priority = tonumber(ARGV[3])
local score = redis.call('ZSCORE', KEYS[1], id)
if score then
  local new = (100 - priority) * SHIFT + tonumber(score) % SHIFT
  redis.call('ZADD', KEYS[1], new, id)
  local tag = redis.call('HGET', KEYS[6], id)
  local key = tag and string.match(tag, '^[^\t]*')
  if key and redis.call('HGET', KEYS[5], key) == id then
    -- A key's job in the queue now below one waiting behind it: they change places.
    local first = redis.call('ZRANGEBYLEX', KEYS[7], string.format('[%s\t', key), string.format('(%s\n', key),
                             'LIMIT', 0, 1)[1]
    local first_score = first and tonumber(string.sub(first, #key + 2, #key + 15), 16)
    if first_score and math.floor(first_score / SHIFT) < math.floor(new / SHIFT) then
      local first_id = string.sub(first, #key + 16)
      redis.call('ZREM', KEYS[7], first)
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZADD', KEYS[7], 0, string.format('%s\t%014x%s', key, new, id))
      redis.call('HSET', KEYS[6], id, string.format('%s\t%014x', key, new))
      redis.call('ZADD', KEYS[1], first_score, first_id)
      redis.call('HSET', KEYS[5], key, first_id)
    end
  end
  return id
end
if redis.call('ZSCORE', KEYS[3], id) then
  redis.call('HSET', KEYS[4], id, priority)
  return id
end
local tag = redis.call('HGET', KEYS[6], id)
if not tag or not redis.call('ZSCORE', KEYS[7], string.format('%s%s', tag, id)) then
  return false
end
local key = string.match(tag, '^[^\t]*')
redis.call('ZREM', KEYS[7], string.format('%s%s', tag, id))
local new = (100 - priority) * SHIFT + tonumber(string.sub(tag, #key + 2), 16) % SHIFT
redis.call('HSET', KEYS[6], id, string.format('%s\t%014x', key, new))
local head, head_score = keyed_head(KEYS[1], KEYS[5], key)
keyed_wait(KEYS[1], KEYS[5], KEYS[6], KEYS[7], key, id, new, head, head_score)
return id
