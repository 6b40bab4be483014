//! Role lists in filter settings.

use lanparty_core::stage::LinkRole;

/// A small set of roles, checked without allocation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoleSet(u8);

impl RoleSet {
    fn bit(role: LinkRole) -> u8 {
        match role {
            LinkRole::Client => 1,
            LinkRole::Gateway => 2,
            LinkRole::Lan => 4,
            LinkRole::Host => 8,
        }
    }

    /// True when `role` is in the set.
    pub fn contains(self, role: LinkRole) -> bool {
        self.0 & Self::bit(role) != 0
    }
}

impl<'a> FromIterator<&'a LinkRole> for RoleSet {
    fn from_iter<I: IntoIterator<Item = &'a LinkRole>>(iter: I) -> Self {
        RoleSet(
            iter.into_iter()
                .fold(0, |bits, role| bits | RoleSet::bit(*role)),
        )
    }
}
