package batcher

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/braze-ingestor/braze-ingestor/schemas"
)

// This file holds the attribute coalescing of docs/design.md §1: within one request, a user's plain
// attribute updates become one attributes object (last write per key wins; null is a value).
// It works on the raw object bytes with a small scanner of the top level: keys and value spans,
// never a decode of the values.
//
// What is "plain" and what is kept apart (docs/braze-rules.md §1 "Attributes object"):
//   - a plain value is a string, number, true/false, null, or an array of those (a whole-array
//     set);
//   - any JSON object value is kept as written: the operators inc, add/remove, $add/$remove/$update
//     and also nested custom attributes and standard object fields (current_location). Braze
//     drops every nested update of a request when one is invalid, so nested values are never
//     rewritten; arrays holding objects (push_tokens, subscription_groups, arrays of objects)
//     likewise;
//   - an object with "_merge_objects" is kept apart whole.
//
// An object that is kept apart is a barrier for the keys it writes: a later plain write to one
// of those keys is never moved in front of it (it starts a new merged object after it). Objects
// merge only when they have the same user identity (schemas.User, resolved once by the decoder:
// identifier kind and unescaped value) and carry the same "_update_existing_only" bytes; an
// object of the same user with another "_update_existing_only" is a barrier too.
//
// Fields that Braze validates per object (email, phone, email_subscribe, push_subscribe) merge
// only when every source gives them the same bytes: a merged object therefore never hides a
// value Braze would reject. (Braze rejecting a merged object rejects all its sources; the
// pipeline dead-letters every one of them.)

// AttrField is one top-level attribute write of an attributes object.
type AttrField struct {
	// Key is the attribute name as Braze sees it: unescaped, leading and trailing spaces
	// stripped (docs/braze-rules.md §1: custom attribute keys are trimmed).
	Key string
	// RawKey is the key as written, between its quotes.
	RawKey []byte
	// Value is the raw JSON value.
	Value []byte
	// Plain is true for a value that replaces the attribute outright (scalar, null, array of
	// scalars); false for operators, nested objects and arrays holding objects or arrays.
	Plain bool
}

// AttrObject is the top level of an attributes object.
type AttrObject struct {
	// ID is the identifier the object names its user with, as the decoder resolved it (the
	// one primary identifier, else email, else phone); 0 when the object has none.
	ID schemas.IDKind
	// UpdateExistingOnly is the raw "_update_existing_only" value, nil when absent.
	UpdateExistingOnly []byte
	// MergeObjects is set when the object carries "_merge_objects".
	MergeObjects bool
	// Meta are the identifier, "_update_existing_only" and "_merge_objects" pairs as written
	// (each a complete "key":value).
	Meta [][]byte
	// Fields are the attribute writes, in object order.
	Fields []AttrField
}

// CreatesOrUpdates reports whether the object applies even to a user that does not exist yet
// (effective "_update_existing_only" is false). For user_alias the default is true.
func (a *AttrObject) CreatesOrUpdates() bool {
	ueo := string(bytes.TrimSpace(a.UpdateExistingOnly))
	if a.ID == schemas.IDAlias {
		return ueo == "false"
	}
	return ueo == "" || ueo == "false" || ueo == "null"
}

// Plain reports whether the whole object may be merged: every field plain, no _merge_objects.
func (a *AttrObject) Plain() bool {
	if a.MergeObjects || a.ID == 0 {
		return false
	}
	for i := range a.Fields {
		if !a.Fields[i].Plain {
			return false
		}
	}
	return true
}

// FreeAttribute reports the standard fields Braze does not bill (docs/braze-rules.md §6 "Not billed"):
// subscription states and push tokens.
func FreeAttribute(key string) bool {
	switch key {
	case "email_subscribe", "push_subscribe", "subscription_groups", "push_tokens":
		return true
	}
	return false
}

// validatedAttribute reports the plain fields Braze validates per object (an invalid value
// rejects the whole object: docs/braze-rules.md §2 "Errors documented per object").
func validatedAttribute(key string) bool {
	switch key {
	case "email", "phone", "email_subscribe", "push_subscribe":
		return true
	}
	return false
}

// ParseAttributes scans the top level of an attributes object into dst (reusing its slices).
// id is the identifier the decoder resolved for the object (schemas.Record.IDKind): its pair
// is not an attribute write and goes first in Meta. It reports false when raw is not a
// well-formed JSON object, or names the identifier twice.
func ParseAttributes(raw []byte, id schemas.IDKind, dst *AttrObject) bool {
	*dst = AttrObject{Meta: dst.Meta[:0], Fields: dst.Fields[:0]}
	s := scan{b: raw}
	s.ws()
	if !s.eat('{') {
		return false
	}
	idName := ""
	if id != 0 {
		idName = id.String()
	}
	idPair, ok := s.attrPairs(dst, idName)
	if !ok || !s.end() {
		return false
	}
	if idPair[0] >= 0 {
		// The identifier pair leads the meta pairs, as it leads a merged object.
		dst.ID = id
		dst.Meta = append(dst.Meta, nil)
		copy(dst.Meta[1:], dst.Meta)
		dst.Meta[0] = s.b[idPair[0]:idPair[1]]
	}
	return true
}

// attrPairs scans the pairs of an object, from after its '{' through its '}', into dst: the
// meta pairs into Meta, the other pairs into Fields except the identifier pair named idName,
// whose span it returns ({-1, -1} when absent). It reports false when the object is not well
// formed, an escaped key does not unescape or the identifier comes twice.
func (s *scan) attrPairs(dst *AttrObject, idName string) (idPair [2]int, ok bool) {
	raw := s.b
	idPair = [2]int{-1, -1}
	if s.ws(); s.eat('}') {
		return idPair, true
	}
	for {
		s.ws()
		pairStart := s.i
		ks, ke, esc, ok := s.str()
		if !ok {
			return idPair, false
		}
		if s.ws(); !s.eat(':') {
			return idPair, false
		}
		s.ws()
		vs := s.i
		plain, ok := s.value()
		if !ok {
			return idPair, false
		}
		ve := s.i
		rawKey := raw[ks:ke]
		switch string(rawKey) {
		case "_update_existing_only":
			dst.UpdateExistingOnly = raw[vs:ve]
			dst.Meta = append(dst.Meta, raw[pairStart:ve])
		case "_merge_objects":
			dst.MergeObjects = true
			dst.Meta = append(dst.Meta, raw[pairStart:ve])
		default:
			key := string(rawKey)
			if esc {
				var k string
				if json.Unmarshal(raw[ks-1:ke+1], &k) != nil {
					return idPair, false
				}
				key = k
			}
			if idName != "" && key == idName {
				if idPair[0] >= 0 {
					return idPair, false
				}
				idPair = [2]int{pairStart, ve}
				break
			}
			dst.Fields = append(dst.Fields, AttrField{Key: strings.TrimSpace(key), RawKey: rawKey, Value: raw[vs:ve], Plain: plain})
		}
		if s.ws(); s.eat(',') {
			continue
		}
		return idPair, s.eat('}')
	}
}

// AppendAttributes appends an attributes object made of a's meta pairs and the fields for
// which keep returns true (all when keep is nil).
func AppendAttributes(dst []byte, a *AttrObject, keep func(i int) bool) []byte {
	dst = append(dst, '{')
	first := true
	for _, m := range a.Meta {
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, m...)
	}
	for i := range a.Fields {
		if keep != nil && !keep(i) {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendPair(dst, a.Fields[i].RawKey, a.Fields[i].Value)
	}
	return append(dst, '}')
}

func appendPair(dst, rawKey, value []byte) []byte {
	dst = append(dst, '"')
	dst = append(dst, rawKey...)
	dst = append(dst, '"', ':')
	return append(dst, value...)
}

// Coalesced is one object of a coalesced request.
type Coalesced struct {
	Kind schemas.Kind
	// Bytes is the merged object; nil when the object is its single source unchanged.
	Bytes []byte
	// Sources are the positions of the input objects behind this one, in order.
	Sources []int
}

// UserObject is an Object that knows its user, as the decoder resolved it
// (schemas.Record.User).
type UserObject interface {
	Object
	ObjectUser() schemas.User
}

// Coalesce merges the plain attribute updates of objs per user (see the rules at the top of
// this file) and returns the request's objects in order, each with the positions of its
// sources. Encoding the result (Encode over the merged bytes) never produces a larger body or
// more objects than encoding objs.
func Coalesce[T UserObject](objs []T) []Coalesced {
	var c Coalescer
	for i := range objs {
		c.Add(objs[i].ObjectKind(), objs[i].ObjectUser(), objs[i].ObjectBytes())
	}
	return c.Result()
}

// Coalescer coalesces a request incrementally: the lane can ask, record by record, whether a
// record would merge into an object already in the request (then it costs no object).
// The zero value is ready to use.
type Coalescer struct {
	outs  []coOut
	users map[uint64]*coUser // by schemas.User.Hash
	n     int                // sources added
	obj   AttrObject
	// peek caches the last parse of Merges for the following Add of the same bytes.
	peekRaw []byte
	peekOK  bool
	peekObj AttrObject
	// Overwritten counts attribute writes dropped because a later write to the same key in
	// the same merged object replaced them (each a data point saved).
	Overwritten int
}

type coOut struct {
	kind   schemas.Kind
	src    []int
	raw    []byte // first source
	first  AttrObject
	fields []AttrField // merged fields (nil until a second source merges)
	idx    map[string]int
}

type coUser struct {
	lastTouch map[string]int // attribute key -> last output object writing it
	targets   []coTarget     // latest mergeable object per _update_existing_only bytes
}

type coTarget struct {
	ueo string
	out int
}

// Reset empties the coalescer.
func (c *Coalescer) Reset() {
	clear(c.outs)
	c.outs = c.outs[:0]
	clear(c.users)
	c.n = 0
	c.peekRaw = nil
	c.Overwritten = 0
	// Drop references to the last records' bytes.
	for _, o := range []*AttrObject{&c.obj, &c.peekObj} {
		clear(o.Fields[:cap(o.Fields)])
		clear(o.Meta[:cap(o.Meta)])
		*o = AttrObject{Meta: o.Meta[:0], Fields: o.Fields[:0]}
	}
}

// Len is the number of objects the request has so far.
func (c *Coalescer) Len() int { return len(c.outs) }

func (c *Coalescer) parse(raw []byte, id schemas.IDKind) (*AttrObject, bool) {
	if c.peekRaw != nil && len(raw) == len(c.peekRaw) && len(raw) > 0 && &raw[0] == &c.peekRaw[0] {
		c.peekRaw = nil
		c.obj, c.peekObj = c.peekObj, c.obj
		return &c.obj, c.peekOK
	}
	ok := ParseAttributes(raw, id, &c.obj)
	return &c.obj, ok
}

// target returns the output object a plain attributes object would merge into, or -1.
func (c *Coalescer) target(a *AttrObject, user uint64) int {
	u := c.users[user]
	if u == nil {
		return -1
	}
	t := -1
	ueo := string(a.UpdateExistingOnly)
	for _, tg := range u.targets {
		if tg.ueo == ueo {
			t = tg.out
		}
	}
	if t < 0 {
		return -1
	}
	o := &c.outs[t]
	for i := range a.Fields {
		f := &a.Fields[i]
		if lt, ok := u.lastTouch[f.Key]; ok && lt > t {
			return -1 // something after the target writes this key: keep the order
		}
		if validatedAttribute(f.Key) {
			if v, ok := o.value(f.Key); ok && !bytes.Equal(v, f.Value) {
				return -1
			}
		}
	}
	return t
}

func (o *coOut) value(key string) ([]byte, bool) {
	if o.fields != nil {
		if i, ok := o.idx[key]; ok {
			return o.fields[i].Value, true
		}
		return nil, false
	}
	for i := range o.first.Fields {
		if o.first.Fields[i].Key == key {
			return o.first.Fields[i].Value, true
		}
	}
	return nil, false
}

// Merges reports whether an object of kind, user and bytes would merge into an object
// already in the request (it does not add it).
func (c *Coalescer) Merges(kind schemas.Kind, user schemas.User, raw []byte) bool {
	if kind != schemas.KindAttributes {
		return false
	}
	c.peekOK = ParseAttributes(raw, user.ID, &c.peekObj)
	c.peekRaw = raw
	return c.peekOK && c.peekObj.Plain() && c.target(&c.peekObj, user.Hash) >= 0
}

// Add adds the next object of the request and reports whether it merged into an earlier one.
func (c *Coalescer) Add(kind schemas.Kind, user schemas.User, raw []byte) bool {
	src := c.n
	c.n++
	if kind != schemas.KindAttributes {
		c.outs = append(c.outs, coOut{kind: kind, src: []int{src}, raw: raw})
		return false
	}
	a, ok := c.parse(raw, user.ID)
	if !ok || a.ID == 0 {
		// No identifier (an anonymous push-token import) or not an object: keep it apart and
		// close every merge.
		c.outs = append(c.outs, coOut{kind: kind, src: []int{src}, raw: raw})
		clear(c.users)
		return false
	}
	if c.users == nil {
		c.users = map[uint64]*coUser{}
	}
	u := c.users[user.Hash]
	if u == nil {
		u = &coUser{lastTouch: map[string]int{}}
		c.users[user.Hash] = u
	}
	plain := a.Plain()
	if plain {
		if t := c.target(a, user.Hash); t >= 0 {
			c.merge(t, src, a, u)
			return true
		}
	}
	out := len(c.outs)
	o := coOut{kind: kind, src: []int{src}, raw: raw}
	if plain {
		o.first = cloneAttr(a)
		ueo := string(a.UpdateExistingOnly)
		found := false
		for i := range u.targets {
			if u.targets[i].ueo == ueo {
				u.targets[i].out, found = out, true
			}
		}
		if !found {
			u.targets = append(u.targets, coTarget{ueo: ueo, out: out})
		}
	}
	for i := range a.Fields {
		u.lastTouch[a.Fields[i].Key] = out
	}
	c.outs = append(c.outs, o)
	return false
}

func cloneAttr(a *AttrObject) AttrObject {
	return AttrObject{ID: a.ID, UpdateExistingOnly: a.UpdateExistingOnly,
		MergeObjects: a.MergeObjects, Meta: append([][]byte(nil), a.Meta...), Fields: append([]AttrField(nil), a.Fields...)}
}

func (c *Coalescer) merge(t, src int, a *AttrObject, u *coUser) {
	o := &c.outs[t]
	if o.fields == nil {
		o.fields = make([]AttrField, 0, len(o.first.Fields)+len(a.Fields))
		o.idx = make(map[string]int, len(o.first.Fields)+len(a.Fields))
		for _, f := range o.first.Fields {
			if i, ok := o.idx[f.Key]; ok {
				// A key repeated inside one object: the last one is what Braze keeps.
				o.fields[i].Value = f.Value
				continue
			}
			o.idx[f.Key] = len(o.fields)
			o.fields = append(o.fields, f)
		}
	}
	for _, f := range a.Fields {
		if i, ok := o.idx[f.Key]; ok {
			o.fields[i].Value = f.Value
			c.Overwritten++
		} else {
			o.idx[f.Key] = len(o.fields)
			o.fields = append(o.fields, f)
		}
		u.lastTouch[f.Key] = t
	}
	o.src = append(o.src, src)
}

// Result returns the request's objects in order.
func (c *Coalescer) Result() []Coalesced {
	out := make([]Coalesced, len(c.outs))
	for i := range c.outs {
		o := &c.outs[i]
		out[i] = Coalesced{Kind: o.kind, Sources: o.src}
		if len(o.src) > 1 {
			m := AttrObject{Meta: o.first.Meta, Fields: o.fields}
			out[i].Bytes = AppendAttributes(make([]byte, 0, len(o.raw)*2), &m, nil)
		}
	}
	return out
}

// scan is a minimal JSON scanner over well-formed input.
type scan struct {
	b []byte
	i int
}

func (s *scan) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scan) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scan) end() bool {
	s.ws()
	return s.i == len(s.b)
}

// str scans a string and returns the span of its contents and whether it has escapes.
func (s *scan) str() (start, end int, esc, ok bool) {
	if !s.eat('"') {
		return 0, 0, false, false
	}
	start = s.i
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '\\':
			esc = true
			s.i += 2
			continue
		case '"':
			end = s.i
			s.i++
			return start, end, esc, true
		}
		s.i++
	}
	return 0, 0, false, false
}

// value skips one value and reports whether it is plain (scalar, or array of scalars).
func (s *scan) value() (plain, ok bool) {
	if s.i >= len(s.b) {
		return false, false
	}
	switch s.b[s.i] {
	case '"':
		_, _, _, ok := s.str()
		return true, ok
	case '{':
		return false, s.nested()
	case '[':
		start := s.i
		if !s.nested() {
			return false, false
		}
		// An array of scalars has no brackets or braces outside strings after its first '['.
		in := false
		for j := start + 1; j < s.i-1; j++ {
			switch c := s.b[j]; {
			case in && c == '\\':
				j++
			case c == '"':
				in = !in
			case !in && (c == '{' || c == '['):
				return false, true
			}
		}
		return true, true
	default:
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return s.i > start, s.i > start
			}
			s.i++
		}
		return s.i > start, s.i > start
	}
}

// nested skips an object or array, counting depth outside strings.
func (s *scan) nested() bool {
	depth := 0
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			if _, _, _, ok := s.str(); !ok {
				return false
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				s.i++
				return true
			}
		}
		s.i++
	}
	return false
}
