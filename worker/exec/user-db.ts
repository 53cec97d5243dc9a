// Resolves a Dockerfile `USER` / `--chown` spec ("name", "uid", "name:group", "uid:gid") against the
// /etc/passwd and /etc/group of a rootfs directory, the way runc's libcontainer/user does for Docker:
// unknown numeric ids are accepted as-is, unknown names are errors, the default is root. The files are
// read through root-path.ts so a symlinked /etc/passwd cannot make us read a host file.
import { readFileSync } from 'node:fs';
import { resolveInRoot } from './root-path.js';
import { ObdkitError, errnoCode } from '../../src/util/errors.js';

export interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

export interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  /** Supplementary groups (from /etc/group membership) when no group was given explicitly. */
  additionalGids: number[];
  /** Home directory from passwd, "/" when the user is not listed. */
  home: string;
}

export function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const f = line.split(':');
    const uid = parseId(f[2]);
    const gid = parseId(f[3]);
    if (f[0] === undefined || uid === null || gid === null) continue;
    out.push({ name: f[0], uid, gid, home: f[5] ?? '/' });
  }
  return out;
}

export function parseGroup(text: string): GroupEntry[] {
  const out: GroupEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const f = line.split(':');
    const gid = parseId(f[2]);
    if (f[0] === undefined || gid === null) continue;
    const members = (f[3] ?? '').split(',').map((m) => m.trim()).filter((m) => m !== '');
    out.push({ name: f[0], gid, members });
  }
  return out;
}

function parseId(s: string | undefined): number | null {
  if (s === undefined || !/^\d+$/.test(s)) return null;
  const n = Number(s);
  return n <= 0xffffffff ? n : null;
}

function readInRoot(root: string, path: string): string {
  try {
    return readFileSync(resolveInRoot(root, path), 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return '';
    throw err;
  }
}

/** Reads the user database of a rootfs; missing files count as empty. */
export function readUserDb(root: string): { passwd: PasswdEntry[]; groups: GroupEntry[] } {
  return { passwd: parsePasswd(readInRoot(root, '/etc/passwd')), groups: parseGroup(readInRoot(root, '/etc/group')) };
}

/** Resolves `spec` (empty or undefined = root) in the rootfs at `root`. */
export function resolveUser(root: string, spec: string | undefined): ResolvedUser {
  const db = readUserDb(root);
  const [userPart, groupPart] = splitSpec(spec);
  let user: PasswdEntry | undefined;
  let uid: number;
  let gid: number;
  let home = '/';
  const numericUid = parseId(userPart);
  if (numericUid !== null) {
    uid = numericUid;
    user = db.passwd.find((p) => p.uid === uid);
    gid = user?.gid ?? 0;
  } else {
    user = db.passwd.find((p) => p.name === userPart);
    if (user === undefined) {
      throw new ObdkitError('EUSER', `unable to find user ${userPart}: no matching entries in passwd file`, {
        user: userPart,
      });
    }
    uid = user.uid;
    gid = user.gid;
  }
  if (user !== undefined) home = user.home || '/';
  let additionalGids: number[] = [];
  if (groupPart !== undefined) {
    gid = resolveGroup(db.groups, groupPart);
  } else if (user !== undefined) {
    const name = user.name;
    additionalGids = [...new Set(db.groups.filter((g) => g.members.includes(name)).map((g) => g.gid))].filter(
      (g) => g !== gid,
    );
  }
  return { uid, gid, additionalGids, home };
}

/** Resolves a group name or number against a group list. */
export function resolveGroup(groups: GroupEntry[], spec: string): number {
  const n = parseId(spec);
  if (n !== null) return n;
  const g = groups.find((e) => e.name === spec);
  if (g === undefined) {
    throw new ObdkitError('EUSER', `unable to find group ${spec}: no matching entries in group file`, { group: spec });
  }
  return g.gid;
}

/**
 * Resolves a `--chown` spec. Unlike USER, a spec without a group uses the uid as gid (Docker's
 * documented COPY --chown rule), and supplementary groups do not apply.
 */
export function resolveChown(root: string, spec: string): { uid: number; gid: number } {
  const db = readUserDb(root);
  const [userPart, groupPart] = splitSpec(spec);
  let uid: number;
  let gid: number;
  const n = parseId(userPart);
  if (n !== null) {
    uid = n;
    gid = n;
  } else {
    const u = db.passwd.find((p) => p.name === userPart);
    if (u === undefined) {
      throw new ObdkitError('EUSER', `unable to find user ${userPart}: no matching entries in passwd file`, {
        user: userPart,
      });
    }
    uid = u.uid;
    gid = u.uid;
  }
  if (groupPart !== undefined) gid = resolveGroup(db.groups, groupPart);
  return { uid, gid };
}

function splitSpec(spec: string | undefined): [string, string | undefined] {
  const s = (spec ?? '').trim();
  if (s === '') return ['0', undefined];
  const i = s.indexOf(':');
  if (i < 0) return [s, undefined];
  const u = s.slice(0, i) || '0';
  const g = s.slice(i + 1);
  return [u, g === '' ? undefined : g];
}
