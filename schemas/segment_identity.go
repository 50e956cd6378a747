package schemas

import "bytes"

// Segment calls that become records of endpoints other than /users/track (docs/segment.md
// "identify, alias and delete: the other endpoints"):
//
//   - identify with a userId and an anonymousId, with IdentifyAlias: one /users/identify
//     aliases_to_identify entry {external_id: userId, user_alias: the anonymous alias},
//     before the identify's attributes record;
//   - alias, with AliasAsMerge: one /users/merge entry, identifier_to_merge previousId's
//     profile (the anonymous alias when previousId is the call's anonymousId, else
//     external_id previousId), identifier_to_keep external_id userId;
//   - delete: one /users/delete identifier, external_id userId, else the anonymous alias.
//
// Each entry is written in the shape the native envelope of its kind carries
// (docs/design.md §2), so a dead-lettered entry replays to a native topic unchanged. Its
// ordering identity is the profile that survives (docs/design.md §2): userId for identify
// and merge, the deleted identifier for delete. Like every built object, each entry is
// validated by the native rules, which also set its identity and PackKey exactly as for a
// native record (segDecode.finish).

// segWho is the identity of an entry: an identifier kind and the message span of the JSON
// string holding it (userId, anonymousId or previousId).
type segWho struct {
	kind IDKind
	v    val
}

// aliasLabel is the alias_label of anonymous users.
func (sd *segDecode) aliasLabel() string {
	if sd.d.AliasLabel == "" {
		return DefaultSegmentAliasLabel
	}
	return sd.d.AliasLabel
}

// writeIdentifier writes "external_id":v or "user_alias":{"alias_name":v,"alias_label":…}
// (no braces around it).
func (sd *segDecode) writeIdentifier(w segWho) {
	if w.kind == IDExternal {
		sd.b = append(sd.b, `"external_id":`...)
		sd.b = append(sd.b, sd.raw(w.v)...)
		return
	}
	sd.b = append(sd.b, `"user_alias":{"alias_name":`...)
	sd.b = append(sd.b, sd.raw(w.v)...)
	sd.b = append(sd.b, `,"alias_label":`...)
	sd.b = appendJSONString(sd.b, sd.aliasLabel())
	sd.b = append(sd.b, '}')
}

// beginEntry records that an entry of kind for w starts at start; end closes it.
func (sd *segDecode) beginEntry(kind Kind, start int, w segWho) {
	sd.objs = append(sd.objs, segObj{kind: kind, start: start, who: w})
}

// namedVal is a top-level member and its JSON pointer, for errors.
type namedVal struct {
	v    val
	name string
}

// checkStrings checks that each named member is a string, null or absent.
func (sd *segDecode) checkStrings(vs ...namedVal) error {
	for _, f := range vs {
		if !sd.isNull(f.v) && sd.buf[f.v.start] != '"' {
			return segErr(f.name, "must be a string")
		}
	}
	return nil
}

// identifyAlias writes the /users/identify entry of an identify call that has both a userId
// and an anonymousId (IdentifyAlias): the anonymous user's alias profile is identified as
// userId, so its history moves to the known profile (docs/braze-rules.md, /users/identify).
func (sd *segDecode) identifyAlias() {
	m := &sd.m
	if !sd.d.IdentifyAlias || !sd.nonEmptyStr(m.userID) || !sd.nonEmptyStr(m.anonID) {
		return
	}
	start := len(sd.b)
	sd.b = append(sd.b, '{')
	sd.writeIdentifier(segWho{IDExternal, m.userID})
	sd.b = append(sd.b, ',')
	sd.writeIdentifier(segWho{IDAlias, m.anonID})
	sd.beginEntry(KindIdentify, start, segWho{IDExternal, m.userID})
	sd.end()
}

// merge maps an alias call to a /users/merge entry (AliasAsMerge). skip is true when
// previousId and userId are the same: there is nothing to merge.
func (sd *segDecode) merge() (skip bool, err error) {
	m := &sd.m
	if err := sd.checkStrings(namedVal{m.userID, "/userId"}, namedVal{m.previousID, "/previousId"},
		namedVal{m.anonID, "/anonymousId"}); err != nil {
		return false, err
	}
	if !sd.nonEmptyStr(m.userID) {
		return false, segErr("/userId", "an alias call needs a non-empty userId: the user kept")
	}
	if !sd.nonEmptyStr(m.previousID) {
		return false, segErr("/previousId", "an alias call needs a non-empty previousId: the user merged into userId")
	}
	prev, _ := sd.str(m.previousID)
	prev = bytes.Clone(prev) // sd.str may return sd.tmp
	if u, _ := sd.str(m.userID); bytes.Equal(u, prev) {
		return true, nil
	}
	from := segWho{IDExternal, m.previousID}
	if sd.nonEmptyStr(m.anonID) {
		if a, _ := sd.str(m.anonID); bytes.Equal(a, prev) {
			// previousId is the anonymous id the user had (analytics.js sends its
			// anonymousId as previousId until a userId is known): that profile is the
			// anonymous user's alias profile.
			from.kind = IDAlias
		}
	}
	if from.kind == IDExternal {
		if err := sd.checkExternalID(m.previousID, "/previousId"); err != nil {
			return false, err
		}
	}
	start := len(sd.b)
	sd.b = append(sd.b, `{"identifier_to_merge":{`...)
	sd.writeIdentifier(from)
	sd.b = append(sd.b, `},"identifier_to_keep":{`...)
	sd.writeIdentifier(segWho{IDExternal, m.userID})
	sd.b = append(sd.b, '}')
	sd.beginEntry(KindMerge, start, segWho{IDExternal, m.userID})
	sd.end()
	return false, nil
}

// deleteUser maps a Segment user-deletion request (type "delete") to a /users/delete
// identifier: external_id userId, else the anonymous user's alias.
func (sd *segDecode) deleteUser() error {
	m := &sd.m
	if err := sd.checkStrings(namedVal{m.userID, "/userId"}, namedVal{m.anonID, "/anonymousId"}); err != nil {
		return err
	}
	var who segWho
	switch {
	case sd.nonEmptyStr(m.userID):
		who = segWho{IDExternal, m.userID}
	case sd.nonEmptyStr(m.anonID):
		who = segWho{IDAlias, m.anonID}
	default:
		return segErr("/userId", "a delete needs a non-empty userId or anonymousId: the user to delete")
	}
	start := len(sd.b)
	sd.b = append(sd.b, '{')
	sd.writeIdentifier(who)
	sd.beginEntry(KindDelete, start, who)
	sd.end()
	return nil
}

// checkExternalID applies the external_id rules (docs/braze-rules.md §1 "Identifiers") to
// the string at v: at most 987 bytes, no NUL.
func (sd *segDecode) checkExternalID(v val, field string) error {
	s, _ := sd.str(v)
	switch {
	case len(s) > maxExternalIDBytes:
		return segErr(field, "must be at most 987 bytes (it becomes a Braze external_id)")
	case bytes.IndexByte(s, 0) >= 0:
		return segErr(field, "must not contain NUL (\\u0000): Braze fails the whole request on it")
	}
	return nil
}

// checkEntry applies the external_id rules to the userId or previousId an entry was built
// from, to name the Segment field in the error; the native rules (finish) check the rest and
// set the record's identity and PackKey.
func (sd *segDecode) checkEntry(o segObj) error {
	if o.who.kind != IDExternal {
		return nil
	}
	return sd.checkExternalID(o.who.v, "/userId")
}
